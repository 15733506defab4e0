"""The REST gateway: Envoy transcoding the documented REST paths onto crm_hub's gRPC services.

- ``config``: GatewaySettings (CRM_HUB_HTTP_ADDRESS, CRM_HUB_TLS_CERT/KEY, CRM_HUB_GRPC_UPSTREAMS,
  CRM_HUB_GRPC_UPSTREAM_TLS_CA/CERT/KEY, CRM_HUB_ENVOY_ADMIN_PORT), the request limits, and the Envoy
  configuration rendered from ``envoy.yaml.tmpl``.
- ``error_body.lua``: drops headers gRPC cannot carry, refuses REST requests the replicas must not see (405,
  413, 414, 415, ...), and gives every REST error one JSON shape, ``{success: false, code, message, reason,
  details}``.
- ``descriptors``: the committed descriptor set Envoy transcodes with (``crm_hub.binpb``).
- ``openapi``: gateway/openapi.json, generated from the same descriptors.
- ``process``: EnvoyGateway (start, ready, stop) and ``run_gateway`` (``crm-hub gateway``); ``crm-hub up``, the
  gRPC server with Envoy in front, is ``crm_hub.service.run.run_up``.

    python -m crm_hub.gateway generate   # rewrite crm_hub.binpb and gateway/openapi.json
    python -m crm_hub.gateway check      # exit 1 if either is stale
"""

from __future__ import annotations

from crm_hub.gateway.config import DEFAULT_HTTP_ADDRESS, GatewaySettings, HostPort, parse_address, render_config
from crm_hub.gateway.process import (
    EnvoyGateway,
    EnvoyNotFound,
    GatewayError,
    UpstreamRequests,
    find_envoy,
    run_gateway,
)

__all__ = [
    "DEFAULT_HTTP_ADDRESS",
    "EnvoyGateway",
    "EnvoyNotFound",
    "GatewayError",
    "GatewaySettings",
    "HostPort",
    "UpstreamRequests",
    "find_envoy",
    "parse_address",
    "render_config",
    "run_gateway",
]
