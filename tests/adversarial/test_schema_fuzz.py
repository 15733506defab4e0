"""Schema fuzzing of the REST API through the real Envoy: whatever a client sends, crm_hub never answers 5xx,
and every answer is what gateway/openapi.json says it is.

schemathesis generates requests from ``gateway/openapi.json`` — valid ones, and invalid ones (wrong JSON types,
odd header names, missing or extra parameters, unexpected methods) — and sends them to `crm-hub up --sandbox`
(gRPC server + Envoy, both fake CRMs connected for the token's team). It runs three times: as an admin, as a
member, and with no token at all (schemathesis then makes up Authorization headers too). What it cannot generate
(bytes that are not UTF-8, NULs, bodies past the message limit) test_malformed_requests.py sends by hand.

The run is seeded and deterministic, so CI sees the same requests every time; ``make fuzz`` runs the same tests
with many more examples, shrinking failures to a minimal request (``CRM_HUB_FUZZ_*`` below, and the databases in
sandbox.py).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.adversarial.sandbox import MAPPINGS, Sandbox, on_sandbox_databases

OPENAPI = Path(__file__).resolve().parents[2] / "gateway" / "openapi.json"

#: Examples per operation in the fuzzing phase (the coverage phase adds its own deterministic set on top).
MAX_EXAMPLES = int(os.environ.get("CRM_HUB_FUZZ_EXAMPLES", "150"))
SEED = int(os.environ.get("CRM_HUB_FUZZ_SEED", "20261204"))
#: ``make test`` reports the first failing request as generated; ``make fuzz`` shrinks it to a minimal one.
SHRINK = os.environ.get("CRM_HUB_FUZZ_SHRINK", "") == "1"
#: One request slower than this is a finding too (a hang), not just a slow test.
DEADLINE = timedelta(seconds=float(os.environ.get("CRM_HUB_FUZZ_DEADLINE_SECONDS", "5")))

#: Operations only an admin may call (README, "The API"); a member must never get a 2xx from them.
ADMIN_ONLY = frozenset(
    {
        "IntegrationsService_StartOAuth",
        "IntegrationsService_CompleteOAuth",
        "IntegrationsService_Disconnect",
        "FieldsService_SaveMapping",
    }
)
DUPLICATE_POLICIES = ("skip", "update", "create_new")

# Checks, and why these. The document gives every operation a `default` error response, so schemathesis's
# status_code_conformance could never fail (every status is "documented"), and it declares no response headers,
# so response_headers_conformance has nothing to compare: both are left out. What can fail, and must not:
# - not_a_server_error: no request, however malformed, is the server's fault (no 5xx);
# - content_type_conformance: every answer is application/json, as the document declares — Envoy's own
#   refusals included (its local replies are text/plain unless the error filter rewrites them);
# - response_schema_conformance: a 200 has the operation's shape, every error the Error shape
#   (success false, code, message, reason, details);
# - role_is_enforced (ours): no 2xx without a token, nor from an admin-only operation with a member token.
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


pytestmark = on_sandbox_databases()


def steered_document(sandbox: Sandbox) -> dict[str, Any]:
    """gateway/openapi.json, with the sandbox's real names offered beside arbitrary strings.

    Random strings for ``kind``, ``lead_id`` or the sync options would only ever find PROVIDER_NOT_FOUND and
    LEAD_NOT_FOUND. Each such string schema becomes ``anyOf: [{enum: <real values>}, <the schema>]`` — the same
    set of valid values (the enum is a subset of the strings), so every check judges by the original document,
    but about half the generated requests now reach the connected CRMs, the saved mappings and the sync.
    """
    document: dict[str, Any] = copy.deepcopy(json.loads(OPENAPI.read_text()))
    real_values = {"kind": sorted(MAPPINGS), "lead_id": list(sandbox.lead_ids)}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in real_values:
                    parameter["schema"] = _or_one_of(real_values[parameter["name"]], parameter["schema"])
    sync_options = document["components"]["schemas"]["SyncOptions"]["properties"]
    sync_options["provider"] = _or_one_of(sorted(MAPPINGS), sync_options["provider"])
    sync_options["duplicatePolicy"] = _or_one_of(list(DUPLICATE_POLICIES), sync_options["duplicatePolicy"])
    return document


def _or_one_of(values: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "string", "enum": values}, schema]}


def fuzz_config(sandbox: Sandbox) -> schemathesis.Config:
    """Seeded, deterministic, bounded; the sandbox as base URL."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": sandbox.base_url,
            "request-timeout": 15,
            # No crash cache either: replaying an earlier run's failures would make runs differ.
            "cache": {"enabled": False},
            "generation": {
                "mode": "all",  # valid and invalid requests
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",  # no replay of earlier runs' failures: every run sends the same requests
                "no-shrink": not SHRINK,
            },
            # Stateful chains would need links the document does not declare.
            "phases": {"stateful": {"enabled": False}},
        }
    )


def role_is_enforced(role: str) -> Callable[[CheckContext, schemathesis.Response, schemathesis.Case], None]:
    def role_is_enforced(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
        succeeded = 200 <= response.status_code < 300
        if role == "anonymous" and succeeded:
            raise AssertionError(f"{case.operation.label} answered {response.status_code} without a bearer token")
        if role == "member" and succeeded and case.operation.definition.raw.get("operationId") in ADMIN_ONLY:
            raise AssertionError(f"{case.operation.label} is admin-only but answered a member {response.status_code}")

    return role_is_enforced


@pytest.fixture(params=["admin", "member", "anonymous"])
def role(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api(live_sandbox: Sandbox, role: str) -> schemathesis.BaseSchema:
    """The document, steered at the sandbox, loaded for this role's run."""
    return schemathesis.openapi.from_dict(steered_document(live_sandbox), config=fuzz_config(live_sandbox))


@pytest.fixture
def bearer(live_sandbox: Sandbox, role: str) -> dict[str, str]:
    """The headers each request is sent with on top of the generated ones: the role's token (none: anonymous).

    Given at call time, so for admin and member every generated request is authenticated (and gets past the
    auth check into the RPC) while its generated headers — odd names included — are still sent.
    """
    return {} if role == "anonymous" else {"Authorization": f"Bearer {live_sandbox.token(role)}"}


schema = schemathesis.pytest.from_fixture("api")
# Disconnecting would leave the rest of the run facing "not connected": it is fuzzed last, on its own.
DISCONNECT = "IntegrationsService_Disconnect"


@schema.exclude(operation_id=DISCONNECT).parametrize()
@hypothesis.settings(deadline=DEADLINE, suppress_health_check=list(hypothesis.HealthCheck))
def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    case: schemathesis.Case, role: str, bearer: dict[str, str], live_sandbox: Sandbox
) -> None:
    case.call_and_validate(headers=bearer, checks=[*CHECKS, role_is_enforced(role)])


@schema.include(operation_id=DISCONNECT).parametrize()
@hypothesis.settings(deadline=DEADLINE, suppress_health_check=list(hypothesis.HealthCheck))
def test_no_disconnect_request_gets_a_server_error_or_an_undocumented_answer(
    case: schemathesis.Case, role: str, bearer: dict[str, str], live_sandbox: Sandbox
) -> None:
    case.call_and_validate(headers=bearer, checks=[*CHECKS, role_is_enforced(role)])
