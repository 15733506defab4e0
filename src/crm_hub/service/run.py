"""The processes crm_hub runs: ``serve`` (the gRPC server), ``run_up`` (the gRPC server with Envoy in front: one
process for the embedded default) and ``run_worker`` (sync jobs on PostgreSQL). Each runs until SIGTERM/SIGINT
and stops in order: out of the load balancer's rotation first, then calls and batches in flight finish."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from crm_hub.gateway import EnvoyGateway, GatewaySettings, HostPort, parse_address
from crm_hub.gateway.process import until_signal_or_exit
from crm_hub.queue import WorkerOptions
from crm_hub.rpc.server import SHUTDOWN_GRACE_SECONDS, create_server
from crm_hub.service.application import Application
from crm_hub.service.config import Settings

__all__ = ["run_up", "run_worker", "serve"]

logger = logging.getLogger("crm_hub")


@contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def serve(application: Application) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls for up to SHUTDOWN_GRACE_SECONDS."""
    providers = application.load_providers()  # before binding: a broken plugin fails the start
    server, port, health_servicer = await create_server(application)
    stop = asyncio.Event()
    try:
        # From before the server answers: a SIGTERM that comes while it starts is a stop like any other.
        with _stop_on_signals(stop):
            await server.start()
            await application.start_background()
            host = application.settings.grpc_address.rpartition(":")[0]
            logger.info(
                "serving",
                extra={
                    "address": f"{host}:{port}",
                    "tls": application.settings.grpc_tls_cert is not None,
                    "providers": providers,
                },
            )
            await stop.wait()
            logger.info("shutting down", extra={"grace_seconds": SHUTDOWN_GRACE_SECONDS})
            # Tell load balancers first and keep serving until their health checks have seen it (drain_seconds),
            # then stop taking new calls while in-flight ones finish.
            await application.readiness.set_stopping()
            await health_servicer.enter_graceful_shutdown()
            if application.settings.drain_seconds:
                logger.info("draining", extra={"drain_seconds": application.settings.drain_seconds})
                await asyncio.sleep(application.settings.drain_seconds)
            await server.stop(SHUTDOWN_GRACE_SECONDS)
    finally:
        await application.aclose()
    logger.info("stopped")


async def run_up(
    settings: Settings,
    gateway_settings: GatewaySettings | None = None,
    *,
    application: Application | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[EnvoyGateway], None] | None = None,
) -> int:
    """``crm-hub up``: the gRPC server and Envoy in front of it, until SIGTERM/SIGINT (or ``stop``).

    ``settings`` is crm_hub's Settings (the gRPC server binds ``settings.grpc_address``); the gateway
    listens on ``gateway_settings.http_address`` (default: from the environment) and proxies to this
    server only. Shutdown order: Envoy stops accepting and lets requests in flight finish, then the gRPC
    server reports NOT_SERVING and drains, then the application closes. Returns an exit status (1 if
    Envoy died). ``on_ready`` is called with the started gateway once both are serving.
    """
    app = application if application is not None else Application.from_settings(settings)
    stop = stop or asyncio.Event()
    try:
        providers = app.load_providers()  # before binding: a broken plugin fails the start
        server, port, health = await create_server(app)
        # From before anything answers: a SIGTERM while the server or Envoy starts stops the same orderly way.
        with _stop_on_signals(stop):
            await server.start()
            try:
                await app.start_background(worker=True)  # everything in one process: on PostgreSQL it runs jobs too
                bound = parse_address(settings.grpc_address, setting="CRM_HUB_GRPC_ADDRESS")
                upstream = HostPort(bound.host, port)
                gateway_settings = (gateway_settings or GatewaySettings.from_env()).with_upstreams([upstream])
                async with EnvoyGateway(gateway_settings, inherit_output=True) as gateway:
                    logger.info(
                        "serving",
                        extra={
                            "url": gateway.url,
                            "grpc_address": str(upstream),
                            "providers": providers,
                            "envoy_startup_ms": round((gateway.startup_seconds or 0) * 1000, 1),
                        },
                    )
                    if on_ready is not None:
                        on_ready(gateway)
                    clean = await until_signal_or_exit(gateway, stop)
                    logger.info("shutting down", extra={"grace_seconds": SHUTDOWN_GRACE_SECONDS})
                    await gateway.drain()
            finally:
                await app.readiness.set_stopping()
                await health.enter_graceful_shutdown()
                await server.stop(SHUTDOWN_GRACE_SECONDS)
    finally:
        await app.aclose()
    logger.info("stopped")
    return 0 if clean else 1


async def run_worker(application: Application) -> None:
    """Run batches until SIGTERM/SIGINT; a batch under way then gets its grace period, or is handed back."""
    application.load_providers()  # a broken plugin fails the start, not the first batch
    stop = asyncio.Event()
    try:
        with _stop_on_signals(stop):
            await application.start_background(worker=True)
            logger.info(
                "worker running",
                extra={
                    "queue": application.settings.queue_name,
                    "concurrency": application.settings.worker_concurrency,
                },
            )
            await stop.wait()
            logger.info("worker stopping", extra={"grace_seconds": WorkerOptions().shutdown_grace_seconds})
    finally:
        await application.aclose()
    logger.info("worker stopped")
