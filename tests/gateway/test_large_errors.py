"""A big gRPC error (its message and details travel in the trailers) reaches the client whole, not as a 502.

Envoy took 60 KiB of response headers from a replica; more was an upstream "protocol error" (502), although
the replica had answered INVALID_ARGUMENT. A test-local LeadsService answers CreateLead with as many field
violations as the lead's ``violations`` field asks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from crm_hub.gateway import EnvoyGateway
from crm_hub.v1 import leads_pb2, leads_pb2_grpc
from tests.gateway.conftest import connect_memorycrm, gateway_settings, grpc_server, headers
from tests.support.grpc_errors import details_of

#: ~64 KiB of google.rpc.Status, ~86 KiB once base64 in grpc-status-details-bin: over Envoy's old limit.
MANY_VIOLATIONS = 600


def _violations(count: int) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f"fields[f{n}]", description="x" * 80)
            for n in range(count)
        ]
    )


class ManyViolations(leads_pb2_grpc.LeadsServiceServicer):
    async def CreateLead(
        self, request: leads_pb2.CreateLeadRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> leads_pb2.CreateLeadResponse:
        info, bad_request = any_pb2.Any(), any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason="LEAD_INVALID", domain="crm_hub"))
        bad_request.Pack(_violations(int(request.fields["violations"])))
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message="The lead is not valid.", details=[info, bad_request]
        )
        await context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
async def verbose_gateway(envoy_binary: Path) -> AsyncIterator[EnvoyGateway]:
    def register(server: grpc.aio.Server) -> None:
        leads_pb2_grpc.add_LeadsServiceServicer_to_server(ManyViolations(), server)

    async with grpc_server(register) as port, EnvoyGateway(gateway_settings(port), envoy=envoy_binary) as gateway:
        yield gateway


def test_the_error_is_bigger_than_envoys_old_limit() -> None:
    assert len(_violations(MANY_VIOLATIONS).SerializeToString()) * 4 / 3 > 60 * 1024


async def test_error_with_80_kib_of_details_reaches_a_rest_client_whole(verbose_gateway: EnvoyGateway) -> None:
    async with httpx.AsyncClient(base_url=verbose_gateway.url, trust_env=False) as http:
        response = await http.post("/leads", json={"fields": {"violations": str(MANY_VIOLATIONS)}})
    assert response.status_code == 400, response.text[:300]
    assert int(response.headers["content-length"]) == len(response.content) > 60 * 1024
    error = response.json()  # rewritten by the Lua filter, however big
    assert (error["success"], error["code"], error["reason"]) == (False, 3, "LEAD_INVALID")
    bad_request = next(d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert len(bad_request["fieldViolations"]) == MANY_VIOLATIONS


async def test_error_with_80_kib_of_details_reaches_a_native_grpc_client_whole(verbose_gateway: EnvoyGateway) -> None:
    # gRPC clients refuse more than 16 KiB of metadata by default; this one is told to take it.
    options = (("grpc.max_metadata_size", 1 << 20), ("grpc.absolute_max_metadata_size", 1 << 20))
    async with grpc.aio.insecure_channel(verbose_gateway.grpc_target, options=options) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await leads_pb2_grpc.LeadsServiceStub(channel).CreateLead(
                leads_pb2.CreateLeadRequest(fields={"violations": str(MANY_VIOLATIONS)})
            )
    error = details_of(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "LEAD_INVALID")
    assert len(error.field_violations) == MANY_VIOLATIONS


async def test_mapping_with_10000_entries_is_400_mapping_invalid(http: httpx.AsyncClient, team_id: str) -> None:
    await connect_memorycrm(http, team_id)
    mapping = {f"{n}-not-a-field-name": "email" for n in range(10_000)}
    response = await http.post("/integrations/memorycrm/mapping", json={"mapping": mapping}, headers=headers(team_id))
    assert response.status_code == 400, response.text[:300]
    assert response.json()["reason"] == "MAPPING_INVALID"
