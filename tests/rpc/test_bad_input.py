"""The caller's mistakes are INVALID_ARGUMENT (or UNAUTHENTICATED) with a clear reason, never UNKNOWN or a
random RESOURCE_EXHAUSTED, and they leave no ERROR line and no row behind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
import pytest

from crm_hub.rpc.errors import MAX_FIELD_VIOLATIONS
from crm_hub.rpc.interceptors import MAX_REQUEST_BYTES, MAX_TOKEN_BYTES
from crm_hub.service.application import Application
from crm_hub.storage import LeadRepository
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
from tests.rpc.conftest import Metadata
from tests.support.grpc_errors import details_of

Auth = Callable[..., Metadata]


def _raw_get_lead(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, leads_pb2.GetLeadResponse]:
    """GetLead taking the request's wire bytes as they are, so a test can send what no stub would."""
    return channel.unary_unary(
        "/crm_hub.v1.LeadsService/GetLead",
        request_serializer=None,
        response_deserializer=leads_pb2.GetLeadResponse.FromString,
    )


@pytest.mark.parametrize(
    ("wire", "what"),
    [
        (b"\x0a\x02\xff\xfe", "a lead_id that is not UTF-8"),
        (b"\x0a\x05ab", "a string cut short"),
        (b"\x0a", "a field with no length"),
    ],
    ids=["invalid-utf8", "truncated-string", "truncated-tag"],
)
async def test_a_request_that_does_not_decode_is_invalid_argument_without_an_error_line(
    channel: grpc.aio.Channel, auth: Auth, team_id: str, caplog: pytest.LogCaptureFixture, wire: bytes, what: str
) -> None:
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as caught:
        await _raw_get_lead(channel)(wire, metadata=auth(team_id, "member"))

    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT, what
    assert error.reason == "REQUEST_MALFORMED"
    assert "UTF-8" in error.message
    # The server writes its access line as the call ends, which may be just after the client has the answer.
    async with asyncio.timeout(5):
        while not [record for record in caplog.records if record.name == "crm_hub.rpc"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    [line] = [record for record in caplog.records if record.name == "crm_hub.rpc"]
    assert line.code == "INVALID_ARGUMENT"  # type: ignore[attr-defined]


async def test_an_undecodable_request_is_refused_before_authentication(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _raw_get_lead(channel)(b"\x0a\x02\xff\xfe")

    assert details_of(caught.value).reason == "REQUEST_MALFORMED"


async def test_a_request_over_one_mebibyte_is_invalid_argument_request_too_large(
    channel: grpc.aio.Channel, application: Application, auth: Auth, team_id: str
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    huge = {f"f{i}": "x" * 10_000 for i in range(MAX_REQUEST_BYTES // 10_000 + 5)}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLead(leads_pb2.CreateLeadRequest(fields=huge), metadata=auth(team_id, "member"))

    error = details_of(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "REQUEST_TOO_LARGE"
    assert error.metadata["limit_bytes"] == str(MAX_REQUEST_BYTES)
    async with application.database.session() as session:
        assert await LeadRepository(session).find_by_external_id(team_id, "") is None


@pytest.mark.parametrize("size", [MAX_TOKEN_BYTES + 1, 12 * 1024, 16 * 1024, 40 * 1024])
async def test_an_oversized_token_is_unauthenticated_every_time(channel: grpc.aio.Channel, size: int) -> None:
    # gRPC's own limit refused tokens of 8-16 KiB at random (RESOURCE_EXHAUSTED): the answer must not vary.
    stub = status_pb2_grpc.StatusServiceStub(channel)
    metadata = (("authorization", "Bearer " + "a" * (size - len("Bearer "))),)
    reasons = set()
    for _ in range(20):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetStatus(status_pb2.GetStatusRequest(), metadata=metadata)
        reasons.add((caught.value.code(), details_of(caught.value).reason))

    assert reasons == {(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_TOO_LARGE")}


async def test_a_token_just_under_the_limit_is_read_as_a_token(channel: grpc.aio.Channel) -> None:
    stub = status_pb2_grpc.StatusServiceStub(channel)
    metadata = (("authorization", "Bearer " + "a" * (MAX_TOKEN_BYTES - len("Bearer "))),)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetStatus(status_pb2.GetStatusRequest(), metadata=metadata)

    assert details_of(caught.value).reason == "TOKEN_INVALID"


async def test_a_lead_id_too_long_to_be_one_is_invalid_argument_everywhere(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    leads = leads_pb2_grpc.LeadsServiceStub(channel)
    sync = sync_pb2_grpc.SyncServiceStub(channel)
    lead_id = "f" * 10_000
    calls = [
        leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=auth(team_id, "member")),
        leads.ListTimelineEvents(
            leads_pb2.ListTimelineEventsRequest(lead_id=lead_id), metadata=auth(team_id, "member")
        ),
        sync.SyncLead(
            sync_pb2.SyncLeadRequest(lead_id=lead_id, options=sync_pb2.SyncOptions(provider="memorycrm")),
            metadata=auth(team_id, "member"),
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = details_of(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "LEAD_ID_INVALID")
        assert len(error.message) < 200


@pytest.mark.parametrize("value", ["ada\x00@example.com", "Ada\x00Lovelace", "bell\x07"])
async def test_a_lead_value_with_a_control_character_is_refused_and_not_stored(
    channel: grpc.aio.Channel, application: Application, auth: Auth, team_id: str, value: str
) -> None:
    stub = leads_pb2_grpc.LeadsServiceStub(channel)
    field = "email" if "@" in value else "name"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLead(
            leads_pb2.CreateLeadRequest(fields={field: value}, external_id="nul-1"), metadata=auth(team_id, "member")
        )

    error = details_of(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "LEAD_INVALID")
    assert "control character" in error.field_violations[f"fields[{field}]"]
    async with application.database.session() as session:
        assert await LeadRepository(session).find_by_external_id(team_id, "nul-1") is None


async def test_a_ten_thousand_entry_mapping_answers_with_bounded_details_saying_how_many_were_left_out(
    channel: grpc.aio.Channel, auth: Auth, team_id: str
) -> None:
    integrations = integrations_pb2_grpc.IntegrationsServiceStub(channel)
    started = await integrations.StartOAuth(
        integrations_pb2.StartOAuthRequest(kind="memorycrm"), metadata=auth(team_id)
    )
    await integrations.CompleteOAuth(
        integrations_pb2.CompleteOAuthRequest(kind="memorycrm", code="good-code", state=started.state),
        metadata=auth(team_id),
    )
    fields = fields_pb2_grpc.FieldsServiceStub(channel)
    mapping = {f"lead_field_{i}": f"no_such_field_{i}" for i in range(10_000)}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fields.SaveMapping(
            fields_pb2.SaveMappingRequest(kind="memorycrm", mapping=mapping), metadata=auth(team_id)
        )

    error = details_of(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MAPPING_INVALID")
    listed = len(error.field_violations)
    assert 10 <= listed <= MAX_FIELD_VIOLATIONS
    omitted = int(error.metadata["field_violations_omitted"])
    assert listed + omitted >= 10_000
    assert f"{omitted} more problems are not listed" in error.message
    trailers = dict(caught.value.trailing_metadata() or ())
    # Under gRPC clients' default 8 KiB metadata limit (base64 on the wire), with room to spare.
    assert len(trailers["grpc-status-details-bin"]) * 4 / 3 + len(caught.value.details() or "") < 6 * 1024
    saved = await fields.GetMapping(fields_pb2.GetMappingRequest(kind="memorycrm"), metadata=auth(team_id))
    assert dict(saved.mapping) == {}
