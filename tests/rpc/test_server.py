"""The server as a client sees it: health, reflection, authentication, roles and team isolation."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from crm_hub.rpc.auth import mint_token
from crm_hub.rpc.server import SERVICE_NAMES
from crm_hub.service.application import Application
from crm_hub.storage import TimelineRepository
from crm_hub.v1 import fields_pb2, fields_pb2_grpc, leads_pb2, leads_pb2_grpc, status_pb2, status_pb2_grpc
from tests.rpc.conftest import JWT_SECRET, Metadata
from tests.support.grpc_errors import details_of

Auth = Callable[..., Metadata]


async def test_health_check_says_serving_without_a_token(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    overall = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    leads = await stub.Check(health_pb2.HealthCheckRequest(service="crm_hub.v1.LeadsService"))
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert leads.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_five_services_without_a_token(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = set()
    async for response in responses:
        listed = {service.name for service in response.list_services_response.service}
    assert {
        "crm_hub.v1.IntegrationsService",
        "crm_hub.v1.FieldsService",
        "crm_hub.v1.SyncService",
        "crm_hub.v1.StatusService",
        "crm_hub.v1.LeadsService",
    } <= listed
    assert set(SERVICE_NAMES) <= listed


async def test_call_without_a_token_is_refused_as_unauthenticated(channel: grpc.aio.Channel) -> None:
    stub = status_pb2_grpc.StatusServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetStatus(status_pb2.GetStatusRequest())
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "TOKEN_MISSING"
    assert "Bearer" in error.message


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer not-a-jwt", "TOKEN_INVALID"),
        ("Basic dXNlcjpwYXNz", "TOKEN_MISSING"),
        (f"Bearer {mint_token('some-other-secret-that-is-long-enough', team_id='t', role='admin')}", "TOKEN_INVALID"),
        (f"Bearer {mint_token(JWT_SECRET, team_id='t', role='admin', ttl_seconds=-120)}", "TOKEN_EXPIRED"),
        (f"Bearer {mint_token(JWT_SECRET, team_id='', role='admin')}", "TOKEN_INVALID"),
        (
            f"Bearer {jwt.encode({'sub': 'u', 'team_id': 't', 'role': 'owner', 'exp': 2**40}, JWT_SECRET)}",
            "TOKEN_INVALID",
        ),
        (f"Bearer {jwt.encode({'sub': 'u', 'team_id': 't', 'role': 'admin'}, JWT_SECRET)}", "TOKEN_INVALID"),
    ],
    ids=["garbage", "wrong-scheme", "forged-signature", "expired", "empty-team", "unknown-role", "no-exp"],
)
async def test_bad_tokens_are_refused_as_unauthenticated(
    channel: grpc.aio.Channel, authorization: str, reason: str
) -> None:
    stub = status_pb2_grpc.StatusServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetStatus(status_pb2.GetStatusRequest(), metadata=(("authorization", authorization),))
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == reason


async def test_member_cannot_save_a_mapping(channel: grpc.aio.Channel, auth: Auth, team_id: str) -> None:
    stub = fields_pb2_grpc.FieldsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SaveMapping(
            fields_pb2.SaveMappingRequest(kind="memorycrm", mapping={"email": "email"}),
            metadata=auth(team_id, "member"),
        )
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "PERMISSION_DENIED"
    assert "admin" in error.message


async def test_member_may_read_the_mapping(channel: grpc.aio.Channel, auth: Auth, team_id: str) -> None:
    stub = fields_pb2_grpc.FieldsServiceStub(channel)
    response = await stub.GetMapping(fields_pb2.GetMappingRequest(kind="memorycrm"), metadata=auth(team_id, "member"))
    assert response.success is True
    assert dict(response.mapping) == {}


async def test_lead_created_by_one_team_is_invisible_to_another(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    created = await stub.CreateLead(
        leads_pb2.CreateLeadRequest(fields={"email": "ada@example.com", "name": "Ada"}),
        metadata=auth(team_id, "member"),
    )
    mine = await stub.GetLead(leads_pb2.GetLeadRequest(lead_id=created.lead.id), metadata=auth(team_id, "member"))
    assert dict(mine.lead.fields) == {"email": "ada@example.com", "name": "Ada"}

    other_team = auth(f"{team_id}-other", "admin")
    with pytest.raises(grpc.aio.AioRpcError) as theirs:
        await stub.GetLead(leads_pb2.GetLeadRequest(lead_id=created.lead.id), metadata=other_team)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetLead(leads_pb2.GetLeadRequest(lead_id="0" * 32), metadata=other_team)
    with pytest.raises(grpc.aio.AioRpcError) as timeline:
        await stub.ListTimelineEvents(leads_pb2.ListTimelineEventsRequest(lead_id=created.lead.id), metadata=other_team)
    # Exactly what a lead that never existed looks like: no hint that it exists elsewhere.
    assert theirs.value.code() is missing.value.code() is timeline.value.code() is grpc.StatusCode.NOT_FOUND
    assert theirs.value.details() == missing.value.details().replace("0" * 32, created.lead.id)


async def test_posting_the_same_external_id_twice_returns_the_same_lead(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    request = leads_pb2.CreateLeadRequest(fields={"email": "bo@example.com"}, external_id="form-42")
    first = await stub.CreateLead(request, metadata=auth(team_id, "member"))
    second = await stub.CreateLead(request, metadata=auth(team_id, "member"))
    assert (first.created, second.created) == (True, False)
    assert second.lead.id == first.lead.id
    assert second.lead.external_id == "form-42"


async def test_same_external_id_with_different_fields_is_already_exists(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    first = await stub.CreateLead(
        leads_pb2.CreateLeadRequest(fields={"email": "cy@example.com"}, external_id="form-7"),
        metadata=auth(team_id, "member"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLead(
            leads_pb2.CreateLeadRequest(fields={"email": "other@example.com"}, external_id="form-7"),
            metadata=auth(team_id, "member"),
        )
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "LEAD_EXTERNAL_ID_CONFLICT"
    assert error.metadata["lead_id"] == first.lead.id


async def test_invalid_lead_is_refused_naming_each_field_and_nothing_is_stored(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLead(
            leads_pb2.CreateLeadRequest(fields={"email": "not-an-email", "bad name!": "x"}, external_id="form-9"),
            metadata=auth(team_id, "member"),
        )
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "LEAD_INVALID"
    assert set(error.field_violations) == {"fields[email]", "fields[bad name!]"}
    # Nothing was written: the external id is still free.
    retry = await stub.CreateLead(
        leads_pb2.CreateLeadRequest(fields={"email": "ok@example.com"}, external_id="form-9"),
        metadata=auth(team_id, "member"),
    )
    assert retry.created is True


async def test_status_lists_the_registered_providers(channel: grpc.aio.Channel, auth: Auth, team_id: str) -> None:
    stub = status_pb2_grpc.StatusServiceStub(channel)
    response = await stub.GetStatus(status_pb2.GetStatusRequest(), metadata=auth(team_id, "member"))
    assert response.success is True
    assert list(response.integrations) == ["memorycrm"]
    memorycrm = response.integrations["memorycrm"]
    assert memorycrm.connected is False
    assert memorycrm.state == "DISCONNECTED"
    assert memorycrm.version == "0.0.1"
    assert not memorycrm.HasField("error")
    assert not memorycrm.HasField("last_sync")


async def test_unknown_provider_is_not_found_naming_the_available_ones(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    stub = fields_pb2_grpc.FieldsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListFields(fields_pb2.ListFieldsRequest(kind="hubspot"), metadata=auth(team_id, "member"))
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "PROVIDER_NOT_FOUND"
    assert error.message == "Unknown provider hubspot. Available providers: memorycrm."
    assert error.metadata["available"] == "memorycrm"


async def test_fields_of_a_provider_not_connected_is_failed_precondition(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    stub = fields_pb2_grpc.FieldsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListFields(fields_pb2.ListFieldsRequest(kind="memorycrm"), metadata=auth(team_id, "member"))
    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "PROVIDER_NOT_CONNECTED"


async def test_each_rpc_logs_one_structured_line_without_the_token(
    channel: grpc.aio.Channel, auth: Auth, team_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    metadata = (*auth(team_id, "member"), ("x-request-id", "req-123"))
    with caplog.at_level(logging.INFO, logger="crm_hub.rpc"):
        await stub.CreateLead(leads_pb2.CreateLeadRequest(fields={"email": "log@example.com"}), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetLead(leads_pb2.GetLeadRequest(lead_id="nope"), metadata=metadata)
    lines = [record for record in caplog.records if record.name == "crm_hub.rpc"]
    assert [(r.method, r.code) for r in lines] == [  # type: ignore[attr-defined]
        ("/crm_hub.v1.LeadsService/CreateLead", "OK"),
        ("/crm_hub.v1.LeadsService/GetLead", "NOT_FOUND"),
    ]
    for record in lines:
        assert record.team == team_id  # type: ignore[attr-defined]
        assert record.request_id == "req-123"  # type: ignore[attr-defined]
        assert record.duration_ms >= 0  # type: ignore[attr-defined]
    token = metadata[0][1].removeprefix("Bearer ")
    assert token not in caplog.text
    assert token not in json.dumps([r.__dict__ for r in lines], default=str)


async def test_the_timeline_pages_newest_first_without_skipping_or_repeating(
    channel: grpc.aio.Channel, application: Application, auth: Auth, team_id: str
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    lead = await stub.CreateLead(leads_pb2.CreateLeadRequest(fields={"email": "t@example.com"}), metadata=auth(team_id))
    moment = datetime.now(UTC)
    async with application.database.session() as session:
        timeline = TimelineRepository(session)
        for n in range(7):  # three share one timestamp: the id breaks the tie
            await timeline.append(
                team_id,
                lead_id=lead.lead.id,
                provider="memorycrm",
                action=f"step-{n}",
                message="",
                actor="a",
                request_id="r",
                duration_ms=0,
                created_at=moment + timedelta(seconds=min(n, 4)),
            )
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await stub.ListTimelineEvents(
            leads_pb2.ListTimelineEventsRequest(lead_id=lead.lead.id, page_size=3, page_token=token),
            metadata=auth(team_id),
        )
        seen += [event.action for event in page.events]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 7
    assert set(seen) == {f"step-{n}" for n in range(7)}
    assert set(seen[:3]) == {"step-4", "step-5", "step-6"}  # the same instant, in id order
    assert seen[3:] == ["step-3", "step-2", "step-1", "step-0"]


async def test_a_forged_page_token_is_invalid_argument(channel: grpc.aio.Channel, auth: Auth, team_id: str) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    lead = await stub.CreateLead(leads_pb2.CreateLeadRequest(fields={"email": "f@example.com"}), metadata=auth(team_id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListTimelineEvents(
            leads_pb2.ListTimelineEventsRequest(lead_id=lead.lead.id, page_token="not-a-token"), metadata=auth(team_id)
        )
    assert details_of(caught.value).reason == "PAGE_TOKEN_INVALID"
