"""A client that stops sending gets a JSON 408; a replica that takes its time answering is not cut short.

The gateway here gives a client 1 s (instead of REQUEST_TIMEOUT_SECONDS, 15 s) to send its request, in front
of a test-local StatusService that answers after ``SLOW_ANSWER_SECONDS``: longer than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from crm_hub.gateway import EnvoyGateway
from crm_hub.v1 import status_pb2, status_pb2_grpc
from tests.gateway.conftest import assert_gateway_error, gateway_settings, grpc_server, raw_http, request_head

TEST_REQUEST_TIMEOUT = 1.0
SLOW_ANSWER_SECONDS = 2.0


class SlowStatus(status_pb2_grpc.StatusServiceServicer):
    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> status_pb2.GetStatusResponse:
        await asyncio.sleep(SLOW_ANSWER_SECONDS)
        return status_pb2.GetStatusResponse(success=True)


@pytest.fixture(scope="module")
async def impatient_gateway(envoy_binary: Path) -> AsyncIterator[EnvoyGateway]:
    def register(server: grpc.aio.Server) -> None:
        status_pb2_grpc.add_StatusServiceServicer_to_server(SlowStatus(), server)

    async with grpc_server(register) as port:
        settings = gateway_settings(port, request_timeout=TEST_REQUEST_TIMEOUT)
        async with EnvoyGateway(settings, envoy=envoy_binary) as gateway:
            yield gateway


async def test_client_that_stops_sending_mid_body_gets_408_request_timeout(impatient_gateway: EnvoyGateway) -> None:
    # Announces 1,000 body bytes and sends 1: held until Envoy's 60 s timeout before.
    head = request_head("POST", "/leads", {"content-type": "application/json", "content-length": "1000"})
    response, seconds = await raw_http(impatient_gateway, head, b"{")
    assert_gateway_error(response, 408, "REQUEST_TIMEOUT")
    assert TEST_REQUEST_TIMEOUT - 0.1 < seconds < TEST_REQUEST_TIMEOUT + 1


async def test_client_that_stops_sending_a_chunked_body_gets_408_request_timeout(
    impatient_gateway: EnvoyGateway,
) -> None:
    head = request_head(
        "POST", "/integrations/memorycrm/mapping", {"content-type": "application/json", "transfer-encoding": "chunked"}
    )
    response, seconds = await raw_http(impatient_gateway, head, b"1\r\n{\r\n")
    assert_gateway_error(response, 408, "REQUEST_TIMEOUT")
    assert seconds < TEST_REQUEST_TIMEOUT + 1


async def test_client_that_stops_sending_its_headers_gets_408_request_timeout(
    impatient_gateway: EnvoyGateway,
) -> None:
    response, seconds = await raw_http(impatient_gateway, b"GET /integrations/status HTTP/1.1\r\nhost: gateway\r\n")
    assert_gateway_error(response, 408, "REQUEST_TIMEOUT")
    assert seconds < TEST_REQUEST_TIMEOUT + 1


async def test_request_timeout_does_not_cut_a_slow_answer_short(impatient_gateway: EnvoyGateway) -> None:
    # The timer stops once the request is in: an answer may take longer (up to the route's 60 s).
    async with httpx.AsyncClient(base_url=impatient_gateway.url, timeout=10.0, trust_env=False) as http:
        response = await http.get("/integrations/status")
    assert response.status_code == 200, response.text
    assert response.elapsed.total_seconds() >= SLOW_ANSWER_SECONDS > TEST_REQUEST_TIMEOUT


async def test_request_timeout_does_not_cut_a_slow_native_grpc_answer_short(impatient_gateway: EnvoyGateway) -> None:
    async with grpc.aio.insecure_channel(impatient_gateway.grpc_target) as channel:
        response = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest(), timeout=10)
    assert response.success is True
