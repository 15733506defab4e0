"""The grpc.aio server: crm_hub's five services, health checking, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # health.aio, which the type stubs don't know
from grpc_reflection.v1alpha import reflection

from crm_hub.application import Application
from crm_hub.rpc.interceptors import ServerInterceptor
from crm_hub.rpc.servicers import (
    FieldsServicer,
    IntegrationsServicer,
    LeadsServicer,
    StatusServicer,
    SyncServicer,
)
from crm_hub.v1 import (
    fields_pb2,
    fields_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    leads_pb2,
    leads_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)

__all__ = ["SERVICE_NAMES", "create_server", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    integrations_pb2.DESCRIPTOR.services_by_name["IntegrationsService"].full_name,
    fields_pb2.DESCRIPTOR.services_by_name["FieldsService"].full_name,
    sync_pb2.DESCRIPTOR.services_by_name["SyncService"].full_name,
    status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name,
    leads_pb2.DESCRIPTOR.services_by_name["LeadsService"].full_name,
)
SHUTDOWN_GRACE_SECONDS = 10.0


async def create_server(
    application: Application, address: str | None = None
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Build (but don't start) the server bound to ``address`` ("host:0" picks a free port).

    Returns the server, the bound port and the health servicer (whose status ``serve`` flips).
    """
    server = grpc.aio.server(interceptors=[ServerInterceptor(application.verifier)])
    integrations_pb2_grpc.add_IntegrationsServiceServicer_to_server(IntegrationsServicer(application), server)
    fields_pb2_grpc.add_FieldsServiceServicer_to_server(FieldsServicer(application), server)
    sync_pb2_grpc.add_SyncServiceServicer_to_server(SyncServicer(application), server)
    status_pb2_grpc.add_StatusServiceServicer_to_server(StatusServicer(application), server)
    leads_pb2_grpc.add_LeadsServiceServicer_to_server(LeadsServicer(application), server)

    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (*SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    bind_address = address or application.settings.grpc_address
    port = server.add_insecure_port(bind_address)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {bind_address}")
    return server, port, health_servicer


async def serve(application: Application) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls for up to SHUTDOWN_GRACE_SECONDS."""
    providers = application.load_providers()  # before binding: a broken plugin fails the start
    server, port, health_servicer = await create_server(application)
    await server.start()
    host = application.settings.grpc_address.rpartition(":")[0]
    logger.info("serving", extra={"address": f"{host}:{port}", "providers": providers})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        logger.info("shutting down", extra={"grace_seconds": SHUTDOWN_GRACE_SECONDS})
        # Tell load balancers first, then stop taking new calls while in-flight ones finish.
        await health_servicer.enter_graceful_shutdown()
        await server.stop(SHUTDOWN_GRACE_SECONDS)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await application.aclose()
    logger.info("stopped")
