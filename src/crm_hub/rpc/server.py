"""The grpc.aio server: crm_hub's five services, health checking and reflection (``crm_hub.service.run`` starts
and stops it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # health.aio, which the type stubs don't know
from grpc_reflection.v1alpha import reflection

from crm_hub.errors import ConfigurationError
from crm_hub.observability import tracing
from crm_hub.observability.health import Readiness
from crm_hub.rpc.auth import TokenVerifier
from crm_hub.rpc.interceptors import MAX_REQUEST_BYTES, ServerInterceptor
from crm_hub.rpc.servicers import (
    CoreServices,
    FieldsServicer,
    IntegrationsServicer,
    LeadsServicer,
    StatusServicer,
    SyncServicer,
)
from crm_hub.settings import ListenerPolicy, check_listener_security
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

__all__ = ["SERVICE_NAMES", "SHUTDOWN_GRACE_SECONDS", "ServedApplication", "ServerSettings", "create_server"]

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    integrations_pb2.DESCRIPTOR.services_by_name["IntegrationsService"].full_name,
    fields_pb2.DESCRIPTOR.services_by_name["FieldsService"].full_name,
    sync_pb2.DESCRIPTOR.services_by_name["SyncService"].full_name,
    status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name,
    leads_pb2.DESCRIPTOR.services_by_name["LeadsService"].full_name,
)
SHUTDOWN_GRACE_SECONDS = 10.0
#: gRPC's metadata limits: a soft one that refuses *some* calls above it at random and a hard one that refuses
#: all. Both at 64 KiB, far above the 8 KiB token limit (``MAX_TOKEN_BYTES``), so the answer is never random.
MAX_METADATA_BYTES = 64 * 1024
SERVER_OPTIONS = (
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    # Above MAX_REQUEST_BYTES, so a too-large request reaches the interceptor and gets its clear
    # INVALID_ARGUMENT (REQUEST_TOO_LARGE); only beyond this does gRPC itself refuse it.
    ("grpc.max_receive_message_length", 8 * MAX_REQUEST_BYTES),
)


class ServerSettings(ListenerPolicy, Protocol):
    """What the server reads of the service's settings."""

    @property
    def grpc_address(self) -> str: ...

    @property
    def grpc_tls_cert(self) -> Path | None: ...

    @property
    def grpc_tls_key(self) -> Path | None: ...

    @property
    def grpc_tls_client_ca(self) -> Path | None: ...


class ServedApplication(CoreServices, Protocol):
    """What the server needs of the composed service (``crm_hub.service.Application``): the core's use cases,
    the token verifier, readiness and the settings it listens by."""

    @property
    def verifier(self) -> TokenVerifier: ...

    @property
    def readiness(self) -> Readiness: ...

    @property
    def settings(self) -> ServerSettings: ...


async def create_server(
    application: ServedApplication, address: str | None = None
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Build (but don't start) the server bound to ``address`` ("host:0" picks a free port).

    Returns the server, the bound port and the health servicer (whose status ``serve`` flips).
    """
    bind_address = address or application.settings.grpc_address
    check_listener_security(
        application.settings,
        bind_address,
        tls=application.settings.grpc_tls_cert is not None,
        tls_settings="CRM_HUB_GRPC_TLS_CERT and CRM_HUB_GRPC_TLS_KEY",
    )
    interceptors = [*tracing.grpc_server_interceptors(), ServerInterceptor(application.verifier)]
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    integrations_pb2_grpc.add_IntegrationsServiceServicer_to_server(IntegrationsServicer(application), server)
    fields_pb2_grpc.add_FieldsServiceServicer_to_server(FieldsServicer(application), server)
    sync_pb2_grpc.add_SyncServiceServicer_to_server(SyncServicer(application), server)
    status_pb2_grpc.add_StatusServiceServicer_to_server(StatusServicer(application), server)
    leads_pb2_grpc.add_LeadsServiceServicer_to_server(LeadsServicer(application), server)

    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    async def follow_readiness(ready: bool) -> None:
        # Every service needs the database: all say what the process can do (and "" for the whole server).
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in (*SERVICE_NAMES, ""):
            await health_servicer.set(name, status)

    await follow_readiness(application.readiness.ready)
    application.readiness.on_change(follow_readiness)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    credentials = server_credentials(application.settings)
    if credentials is None:
        port = server.add_insecure_port(bind_address)
    else:
        port = server.add_secure_port(bind_address, credentials)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {bind_address}")
    return server, port, health_servicer


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from CRM_HUB_GRPC_TLS_CERT/KEY (mutual TLS with CRM_HUB_GRPC_TLS_CLIENT_CA), or None."""
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        return None
    key = _read_pem(settings.grpc_tls_key, "CRM_HUB_GRPC_TLS_KEY")
    chain = _read_pem(settings.grpc_tls_cert, "CRM_HUB_GRPC_TLS_CERT")
    client_ca = (
        _read_pem(settings.grpc_tls_client_ca, "CRM_HUB_GRPC_TLS_CLIENT_CA") if settings.grpc_tls_client_ca else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read_pem(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"{setting} names no readable file: {path} ({error.strerror})") from None
