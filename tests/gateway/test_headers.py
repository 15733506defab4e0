"""Request headers: what gRPC cannot carry never reaches a replica, and an oversized header set is a JSON 431.

A test-local StatusService echoes the call's metadata as its ``integrations`` (key -> state = value), so
these tests see exactly which headers arrived at the replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from crm_hub.gateway import EnvoyGateway
from crm_hub.v1 import status_pb2, status_pb2_grpc
from tests.gateway.conftest import assert_gateway_error, gateway_settings, grpc_server, headers
from tests.support.app import bearer

#: Legal in an HTTP header name (RFC 9110 tchar), illegal in a gRPC metadata key ([0-9a-z_.-]).
NOT_IN_GRPC_KEYS = "|'^*&~!#$%+`"
#: What the crm_hub server is to accept (main raises its limit to 64 KiB): more than the gateway lets through.
SERVER_METADATA_LIMITS = (("grpc.max_metadata_size", 64 * 1024), ("grpc.absolute_max_metadata_size", 64 * 1024))


class EchoMetadata(status_pb2_grpc.StatusServiceServicer):
    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> status_pb2.GetStatusResponse:
        received = {
            key: status_pb2.IntegrationStatus(state=value if isinstance(value, str) else value.hex())
            for key, value in context.invocation_metadata() or ()
        }
        return status_pb2.GetStatusResponse(success=True, integrations=received)


@pytest.fixture(scope="module")
async def echo_gateway(envoy_binary: Path) -> AsyncIterator[EnvoyGateway]:
    def register(server: grpc.aio.Server) -> None:
        status_pb2_grpc.add_StatusServiceServicer_to_server(EchoMetadata(), server)

    async with (
        grpc_server(register, options=SERVER_METADATA_LIMITS) as port,
        EnvoyGateway(gateway_settings(port), envoy=envoy_binary) as gateway,
    ):
        yield gateway


async def _metadata_received(gateway: EnvoyGateway, sent: dict[str, str]) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
        response = await http.get("/integrations/status", headers=sent)
    assert response.status_code == 200, response.text
    return {key: status["state"] for key, status in response.json()["integrations"].items()}


@pytest.mark.parametrize("character", list(NOT_IN_GRPC_KEYS), ids=[f"U+{ord(c):04X}" for c in NOT_IN_GRPC_KEYS])
async def test_header_names_grpc_cannot_carry_are_dropped_instead_of_failing_the_call(
    echo_gateway: EnvoyGateway, character: str
) -> None:
    received = await _metadata_received(echo_gateway, {f"i{character}": "Y", "x-kept": "yes"})
    assert f"i{character}" not in received
    assert received["x-kept"] == "yes"  # every other header still arrives


async def test_rest_clients_cannot_send_grpc_protocol_or_binary_metadata(echo_gateway: EnvoyGateway) -> None:
    # A malformed grpc-timeout or a -bin value that is not base64 made the replica fail the call (500).
    received = await _metadata_received(
        echo_gateway, {"grpc-timeout": "banana", "grpc-encoding": "gzip", "x-trace-bin": "!!!", "x-trace": "t"}
    )
    assert not [key for key in received if key.startswith("grpc-") or key.endswith("-bin")]
    assert received["x-trace"] == "t"


async def test_a_header_that_used_to_fail_every_call_is_dropped_on_the_real_server(
    http: httpx.AsyncClient, team_id: str
) -> None:
    # The adversarial run's `curl -H 'i|: Y' .../integrations/status`: 500 "Illegal header key: i|" before.
    response = await http.get("/integrations/status", headers={**headers(team_id, "member"), "i|": "Y"})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True


async def test_native_grpc_clients_keep_their_binary_metadata(echo_gateway: EnvoyGateway) -> None:
    async with grpc.aio.insecure_channel(echo_gateway.grpc_target) as channel:
        response = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=(*bearer("team"), ("x-trace-bin", b"\x00\x01"))
        )
    assert response.integrations["x-trace-bin"].state == "0001"
    assert "authorization" in response.integrations


async def test_request_headers_over_32_kib_are_431_headers_too_large(http: httpx.AsyncClient, team_id: str) -> None:
    response = await http.get("/integrations/status", headers={**headers(team_id), "x-big": "a" * 33 * 1024})
    assert_gateway_error(response, 431, "HEADERS_TOO_LARGE")


async def test_more_than_100_request_headers_are_431_headers_too_large(http: httpx.AsyncClient, team_id: str) -> None:
    many = {f"x-header-{number}": "1" for number in range(101)}
    response = await http.get("/integrations/status", headers={**headers(team_id), **many})
    assert_gateway_error(response, 431, "HEADERS_TOO_LARGE")


async def test_request_headers_under_32_kib_reach_a_server_that_takes_64_kib(echo_gateway: EnvoyGateway) -> None:
    # gRPC's default (8 KiB, and a random refusal up to 16 KiB) is the server's to raise; the gateway
    # forwards everything under its own limit intact.
    received = await _metadata_received(echo_gateway, {"x-big": "a" * 28 * 1024})
    assert received["x-big"] == "a" * 28 * 1024
