"""gateway/openapi.json describes exactly what the gateway serves, and is regenerated from proto/."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2

from crm_hub.gateway.descriptors import load_descriptor_set
from crm_hub.gateway.http_rules import http_bindings
from crm_hub.gateway.openapi import OPENAPI_PATH, check
from crm_hub.rpc.server import SERVICE_NAMES
from crm_hub.v1 import fields_pb2, integrations_pb2, leads_pb2, status_pb2, sync_pb2
from tests.gateway.conftest import headers

_MODULES = (fields_pb2, integrations_pb2, leads_pb2, status_pb2, sync_pb2)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
    return loaded


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (verb.upper(), path): operation
        for path, operations in document["paths"].items()
        for verb, operation in operations.items()
    }


def _rules_of_the_generated_code() -> dict[tuple[str, str], str]:
    rules = {}
    for module in _MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                rules[(verb.upper(), getattr(rule, verb))] = f"/{service.full_name}/{method.name}"
    return rules


def test_committed_document_is_current() -> None:
    assert check() == [], "run `make generate` and commit gateway/openapi.json"


def test_paths_and_methods_are_exactly_the_http_rules(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert {key: operation["x-grpc-method"] for key, operation in operations.items()} == _rules_of_the_generated_code()
    assert {operation["tags"][0] for operation in operations.values()} == {
        name.split(".")[-1] for name in SERVICE_NAMES
    }
    assert document["openapi"] == "3.1.0"


def test_every_path_variable_names_a_request_field() -> None:
    # A misspelled {knd} passes protoc, buf lint and envoy --mode validate; it fails only per request.
    files = load_descriptor_set()
    messages = {f"{file.package}.{m.name}": m for file in files.file for m in file.message_type}
    for binding in http_bindings(files):
        fields = {field.name for field in messages[binding.input_type].field}
        assert set(binding.path_variables) <= fields, binding
        assert binding.body in ("", "*") or binding.body in fields, binding


def test_sync_takes_dry_run_in_the_query_and_the_options_as_body(document: dict[str, Any]) -> None:
    sync = document["paths"]["/crm/sync/lead/{lead_id}"]["post"]
    parameters = {(p["name"], p["in"]): p["schema"] for p in sync["parameters"]}
    assert parameters == {
        ("lead_id", "path"): {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        ("dryRun", "query"): {"type": "boolean"},
    }
    assert sync["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SyncOptions"}
    options = document["components"]["schemas"]["SyncOptions"]["properties"]
    assert set(options) == {"provider", "duplicatePolicy"}
    response = document["components"]["schemas"]["SyncLeadResponse"]
    assert {"success", "contactId", "action", "message"} <= set(response["required"])  # printed even when empty
    assert response["properties"]["payload"] == {
        "type": "object",
        "additionalProperties": True,
        "description": "The CRM properties sent (or that would be sent), with values in the CRM's types.",
    }


def test_path_bound_fields_are_not_in_the_body(document: dict[str, Any]) -> None:
    callback = document["paths"]["/integrations/{kind}/callback"]["post"]
    body = callback["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"code", "state"}


def test_errors_and_security_are_described(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"success", "code", "message", "reason", "details"}
    assert document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for operation in _operations(document).values():
        assert {"200", "401", "default"} <= set(operation["responses"])


_SAMPLE = {"boolean": "true", "integer": "1", "string": "x"}


async def test_every_documented_query_parameter_is_accepted_by_the_gateway(
    document: dict[str, Any], http: httpx.AsyncClient, team_id: str
) -> None:
    checked = 0
    for (verb, path), operation in _operations(document).items():
        url = path.replace("{kind}", "memorycrm").replace("{lead_id}", "0" * 32)
        body = {"provider": "memorycrm"} if "requestBody" in operation else None
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "query":
                continue
            value = _SAMPLE[parameter["schema"]["type"]]
            response = await http.request(
                verb, url, params={parameter["name"]: value}, json=body, headers=headers(team_id)
            )
            assert response.status_code < 500, response.text
            assert response.json().get("reason") not in ("UNKNOWN_QUERY_PARAMETER", "INVALID_ARGUMENT"), (
                verb,
                path,
                parameter["name"],
                response.text,
            )
            checked += 1
    assert checked == 3  # dryRun, pageSize, pageToken
