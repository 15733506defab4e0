"""gateway/openapi.json describes exactly what the gateway serves, and is regenerated from proto/."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2, field_behavior_pb2

from crm_hub.core import fields, leads
from crm_hub.core.sync import DUPLICATE_POLICIES
from crm_hub.gateway.descriptors import load_descriptor_set
from crm_hub.gateway.http_rules import http_bindings
from crm_hub.gateway.openapi import OPENAPI_PATH, check
from crm_hub.providers import PROVIDER_NAME_PATTERN
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
    assert set(options) == {"provider", "duplicatePolicy", "force"}
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
        url = path.replace("{kind}", "memorycrm").replace("{lead_id}", "0" * 32).replace("{job_id}", "0" * 32)
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
    # dryRun (one lead, a job), pageSize and pageToken (timeline, jobs, results), a results page's outcome.
    assert checked == 9


# -- what the server refuses, the document refuses ---------------------------------------------------------------


def _components(document: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def _body_schema(document: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path][verb]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = _components(document)[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_an_empty_lead_is_schema_invalid(document: dict[str, Any]) -> None:
    # POST /leads {} was schema-valid; the server refuses a lead without fields.
    lead = _body_schema(document, "post", "/leads")
    assert lead["required"] == ["fields"]
    assert lead["properties"]["fields"]["minProperties"] == 1


def test_a_sync_without_a_provider_is_schema_invalid(document: dict[str, Any]) -> None:
    # {"provider": ""} was schema-valid; the server refuses it.
    options = _body_schema(document, "post", "/crm/sync/lead/{lead_id}")
    assert options["required"] == ["provider"]
    provider = options["properties"]["provider"]
    assert provider["minLength"] == 1
    assert provider["pattern"] == PROVIDER_NAME_PATTERN.pattern
    assert options["properties"]["duplicatePolicy"]["enum"] == list(DUPLICATE_POLICIES)


def test_an_empty_body_key_is_schema_invalid(document: dict[str, Any]) -> None:
    # {"fields": {"": "x"}} was schema-valid; lead field names match the core's pattern, which "" does not.
    for path, field in (("/leads", "fields"), ("/integrations/{kind}/mapping", "mapping")):
        pattern = _body_schema(document, "post", path)["properties"][field]["propertyNames"]["pattern"]
        assert re.search(pattern, "") is None
        assert re.search(pattern, "email") is not None
        assert re.search(pattern, "1st") is None


def test_required_fields_of_the_callback_and_mapping_are_required(document: dict[str, Any]) -> None:
    callback = _body_schema(document, "post", "/integrations/{kind}/callback")
    assert callback["required"] == ["code", "state"]
    assert callback["properties"]["code"]["minLength"] == callback["properties"]["state"]["minLength"] == 1
    mapping = _body_schema(document, "post", "/integrations/{kind}/mapping")
    assert mapping["required"] == ["mapping"]
    assert mapping["properties"]["mapping"]["minProperties"] == 1


def test_limits_are_the_cores(document: dict[str, Any]) -> None:
    lead = _body_schema(document, "post", "/leads")["properties"]
    assert lead["fields"]["maxProperties"] == leads.MAX_FIELDS
    assert lead["fields"]["propertyNames"]["pattern"] == leads.LEAD_FIELD_NAME.pattern
    assert lead["fields"]["additionalProperties"]["maxLength"] == leads.MAX_VALUE_LENGTH
    assert lead["externalId"]["maxLength"] == leads.MAX_EXTERNAL_ID_LENGTH
    mapping = _body_schema(document, "post", "/integrations/{kind}/mapping")["properties"]["mapping"]
    assert mapping["maxProperties"] == fields.MAX_MAPPING_ENTRIES
    assert mapping["propertyNames"]["pattern"] == leads.LEAD_FIELD_NAME.pattern
    timeline = document["paths"]["/leads/{lead_id}/timeline"]["get"]["parameters"]
    page_size = next(p for p in timeline if p["name"] == "pageSize")["schema"]
    assert (page_size["minimum"], page_size["maximum"]) == (0, leads.MAX_PAGE_SIZE)


def test_path_parameters_carry_the_id_and_provider_formats(document: dict[str, Any]) -> None:
    for operation in _operations(document).values():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                expected = {
                    "lead_id": leads.RECORD_ID.pattern,
                    "job_id": leads.RECORD_ID.pattern,
                    "kind": PROVIDER_NAME_PATTERN.pattern,
                }
                assert parameter["schema"]["pattern"] == expected[parameter["name"]]


def test_operations_with_a_body_document_413_and_415(document: dict[str, Any]) -> None:
    for (verb, path), operation in _operations(document).items():
        has_body = "requestBody" in operation
        assert ({"413", "415"} <= set(operation["responses"])) is has_body, (verb, path)
    reasons = document["components"]["schemas"]["Error"]["properties"]["reason"]["description"]
    for reason in ("METHOD_NOT_ALLOWED", "REQUEST_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "REQUEST_TIMEOUT"):
        assert reason in reasons


def test_required_fields_are_marked_in_the_protos() -> None:
    # The source of `required`: google.api.field_behavior, visible to gRPC clients too.
    required = {
        f"{message.DESCRIPTOR.full_name}.{field.name}"
        for module in _MODULES
        for message in (getattr(module, name) for name in module.DESCRIPTOR.message_types_by_name)
        for field in message.DESCRIPTOR.fields
        if field_behavior_pb2.REQUIRED in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    }
    assert {
        "crm_hub.v1.CreateLeadRequest.fields",
        "crm_hub.v1.SaveMappingRequest.mapping",
        "crm_hub.v1.CompleteOAuthRequest.code",
        "crm_hub.v1.CompleteOAuthRequest.state",
        "crm_hub.v1.SyncOptions.provider",
    } <= required
