"""Native gRPC clients use the same Envoy listener as REST clients."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crm_hub.v1 import leads_pb2, leads_pb2_grpc, status_pb2, status_pb2_grpc
from tests.support.app import bearer
from tests.support.grpc_errors import details_of


async def test_status_service_answers_native_grpc_through_envoy(
    gateway_channel: grpc.aio.Channel, team_id: str
) -> None:
    response = await status_pb2_grpc.StatusServiceStub(gateway_channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=bearer(team_id, "member")
    )
    assert response.success is True
    assert response.integrations["memorycrm"].connected is False


async def test_grpc_errors_keep_their_code_and_rich_details(gateway_channel: grpc.aio.Channel, team_id: str) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(gateway_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLead(leads_pb2.CreateLeadRequest(fields={"email": "nope"}), metadata=bearer(team_id, "member"))
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "LEAD_INVALID"
    assert "fields[email]" in error.field_violations


async def test_health_check_passes_through_envoy(gateway_channel: grpc.aio.Channel) -> None:
    response = await health_pb2_grpc.HealthStub(gateway_channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_unknown_grpc_service_is_unimplemented(gateway_channel: grpc.aio.Channel) -> None:
    call = gateway_channel.unary_unary("/other.v1.Thing/Do", request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"")
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "No such resource." in (caught.value.details() or "")
