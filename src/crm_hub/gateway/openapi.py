"""An OpenAPI 3.1 document of the REST surface, generated from the descriptors (the google.api.http rules).

    python -m crm_hub.gateway generate   # rewrite gateway/openapi.json (and the descriptor set)
    python -m crm_hub.gateway check      # exit 1 if regenerating would change either

What the gateway does is what this describes: paths and verbs from the HTTP rules; path parameters from the
path variables; the remaining scalar request fields as query parameters (camelCase, as the transcoder reads
them) whenever the body is not "*"; the request body from the rule's ``body``; responses with proto3 JSON
names (int64 as strings, Timestamps as RFC 3339 strings); every error as the gateway's error body; bearer
JWT security. Descriptions come from the .proto comments.

What the server refuses, the document refuses too, so a generated client does not send it: fields marked
``(google.api.field_behavior) = REQUIRED`` in proto/ are ``required`` (and non-empty: ``minLength: 1`` for
strings, ``minProperties: 1`` for maps); the other limits of the core (field-name patterns, sizes, the
duplicate policies, the lead id format) are in ``_CONSTRAINTS``, read from where the core defines them.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from crm_hub.core.connections import MAX_OAUTH_CODE_LENGTH
from crm_hub.core.fields import MAX_MAPPING_ENTRIES
from crm_hub.core.leads import (
    LEAD_FIELD_NAME,
    MAX_EXTERNAL_ID_LENGTH,
    MAX_FIELDS,
    MAX_PAGE_SIZE,
    MAX_VALUE_LENGTH,
    RECORD_ID,
)
from crm_hub.core.sync import DUPLICATE_POLICIES, SyncAction
from crm_hub.core.sync.jobs import MAX_LEAD_IDS, MAX_RESULTS_PAGE, SELECTIONS
from crm_hub.core.sync.jobs import MAX_PAGE_SIZE as MAX_JOBS_PAGE
from crm_hub.gateway.config import MAX_REQUEST_BODY_BYTES
from crm_hub.gateway.descriptors import build_descriptor_set
from crm_hub.gateway.http_rules import API_PACKAGE, HttpBinding, http_bindings
from crm_hub.providers import PROVIDER_NAME_PATTERN

__all__ = ["OPENAPI_PATH", "build_openapi", "check", "generate", "render_openapi"]

#: The committed document (in a source checkout).
OPENAPI_PATH = Path(__file__).resolve().parents[3] / "gateway" / "openapi.json"

Schema = dict[str, Any]
FieldProto = descriptor_pb2.FieldDescriptorProto

_SCALARS: dict[int, Schema] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    # proto3 JSON prints 64-bit integers as strings.
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
}

# The core's limits, by request field ("package.Message.field"). A map's keywords apply to the object, with
# its values' under additionalProperties. Each is read from where the core defines it, so the document cannot
# drift from the code.
_PROVIDER_NAME = {"pattern": PROVIDER_NAME_PATTERN.pattern}
_ID = {"pattern": RECORD_ID.pattern}
_CONSTRAINTS: dict[str, Schema] = {
    f"{API_PACKAGE}.CreateLeadRequest.fields": {
        "maxProperties": MAX_FIELDS,
        "propertyNames": {"pattern": LEAD_FIELD_NAME.pattern},
        "additionalProperties": {"maxLength": MAX_VALUE_LENGTH},
    },
    f"{API_PACKAGE}.CreateLeadRequest.external_id": {"maxLength": MAX_EXTERNAL_ID_LENGTH},
    f"{API_PACKAGE}.GetLeadRequest.lead_id": _ID,
    f"{API_PACKAGE}.UpdateLeadRequest.lead_id": _ID,
    f"{API_PACKAGE}.UpdateLeadRequest.fields": {
        "minProperties": 1,
        "maxProperties": MAX_FIELDS,
        "propertyNames": {"pattern": LEAD_FIELD_NAME.pattern},
        "additionalProperties": {"maxLength": MAX_VALUE_LENGTH},
    },
    f"{API_PACKAGE}.DeleteLeadRequest.lead_id": _ID,
    f"{API_PACKAGE}.ListTimelineEventsRequest.lead_id": _ID,
    f"{API_PACKAGE}.ListTimelineEventsRequest.page_size": {"minimum": 0, "maximum": MAX_PAGE_SIZE},
    f"{API_PACKAGE}.SyncLeadRequest.lead_id": _ID,
    f"{API_PACKAGE}.SyncOptions.provider": _PROVIDER_NAME,
    f"{API_PACKAGE}.SyncOptions.duplicate_policy": {"enum": list(DUPLICATE_POLICIES)},
    f"{API_PACKAGE}.SyncLeadsOptions.provider": _PROVIDER_NAME,
    f"{API_PACKAGE}.SyncLeadsOptions.duplicate_policy": {"enum": list(DUPLICATE_POLICIES)},
    f"{API_PACKAGE}.SyncLeadsOptions.selection": {"enum": list(SELECTIONS)},
    f"{API_PACKAGE}.SyncLeadsOptions.lead_ids": {"maxItems": MAX_LEAD_IDS, "items": _ID},
    f"{API_PACKAGE}.ListSyncJobsRequest.page_size": {"minimum": 0, "maximum": MAX_JOBS_PAGE},
    f"{API_PACKAGE}.ListSyncJobResultsRequest.page_size": {"minimum": 0, "maximum": MAX_RESULTS_PAGE},
    f"{API_PACKAGE}.ListSyncJobResultsRequest.outcome": {"enum": ["pending", *(action.value for action in SyncAction)]},
    **{
        f"{API_PACKAGE}.{message}.job_id": _ID
        for message in (
            "GetSyncJobRequest",
            "CancelSyncJobRequest",
            "ListSyncJobResultsRequest",
            "WatchSyncJobRequest",
        )
    },
    f"{API_PACKAGE}.IntegrationSettings.duplicate_policy": {"enum": list(DUPLICATE_POLICIES)},
    f"{API_PACKAGE}.SaveMappingRequest.mapping": {
        "maxProperties": MAX_MAPPING_ENTRIES,
        "propertyNames": {"pattern": LEAD_FIELD_NAME.pattern},
        "additionalProperties": {"minLength": 1},
    },
    f"{API_PACKAGE}.CompleteOAuthRequest.code": {"maxLength": MAX_OAUTH_CODE_LENGTH},
    **{
        f"{API_PACKAGE}.{message}.kind": _PROVIDER_NAME
        for message in (
            "ListFieldsRequest",
            "SaveMappingRequest",
            "GetMappingRequest",
            "StartOAuthRequest",
            "CompleteOAuthRequest",
            "DisconnectRequest",
            "GetIntegrationSettingsRequest",
            "UpdateIntegrationSettingsRequest",
        )
    },
}

#: The gateway's own refusals (gateway/README.md has the table).
GATEWAY_REASONS = (
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "INVALID_JSON",
    "INVALID_ARGUMENT",
    "INVALID_UTF8",
    "UNKNOWN_QUERY_PARAMETER",
    "BODY_FIELD_COLLISION",
    "PATH_VARIABLE_IN_QUERY",
    "REQUEST_TIMEOUT",
    "REQUEST_TOO_LARGE",
    "URI_TOO_LONG",
    "UNSUPPORTED_MEDIA_TYPE",
    "HEADERS_TOO_LARGE",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
)

_ERROR_SCHEMA: Schema = {
    "type": "object",
    "description": (
        "Every REST error, whether a crm_hub RPC failed or the gateway refused the request: a "
        "google.rpc.Status with `success` and the machine-readable `reason` lifted to the top level."
    ),
    "required": ["success", "code", "message", "reason", "details"],
    "properties": {
        "success": {"type": "boolean", "const": False},
        "code": {"type": "integer", "description": "The gRPC status code (google.rpc.Code), e.g. 5 for NOT_FOUND."},
        "message": {"type": "string", "description": "What went wrong, for a person."},
        "reason": {
            "type": "string",
            "description": (
                "Machine-readable reason: the google.rpc.ErrorInfo reason of a crm_hub error (e.g. TOKEN_MISSING, "
                "PERMISSION_DENIED, PROVIDER_NOT_FOUND, PROVIDER_NOT_CONNECTED), or the gateway's own "
                f"({', '.join(GATEWAY_REASONS)})."
            ),
        },
        "details": {
            "type": "array",
            "description": "google.rpc.ErrorInfo, and google.rpc.BadRequest or google.rpc.RetryInfo when relevant.",
            "items": _WELL_KNOWN["google.protobuf.Any"],
        },
    },
}

_ERROR_RESPONSES: dict[str, str] = {
    "400": "The request is malformed or invalid (reason names what: INVALID_JSON, INVALID_ARGUMENT, ...).",
    "401": "No valid bearer token (TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED).",
    "403": "The caller's role may not do this (PERMISSION_DENIED).",
    "404": "No such resource, provider or path.",
    "default": (
        "Any other error, e.g. 409 conflict, 429 rate limited, 503 unavailable; from the gateway 405 "
        "METHOD_NOT_ALLOWED, 408 REQUEST_TIMEOUT, 414 URI_TOO_LONG, 431 HEADERS_TOO_LARGE."
    ),
}
#: Only operations that take a body can be refused for it.
_BODY_ERROR_RESPONSES: dict[str, str] = {
    "413": f"The body is larger than {MAX_REQUEST_BODY_BYTES} bytes (REQUEST_TOO_LARGE).",
    "415": "The body is not Content-Type: application/json (UNSUPPORTED_MEDIA_TYPE).",
}


def _is_required(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """``[(google.api.field_behavior) = REQUIRED]``."""
    from google.api import field_behavior_pb2

    # Re-parse so the extension is read even if the set was parsed before it was registered.
    options = descriptor_pb2.FieldOptions.FromString(field.options.SerializeToString())
    return field_behavior_pb2.REQUIRED in options.Extensions[field_behavior_pb2.field_behavior]


def _merge(schema: Schema, extra: Schema) -> Schema:
    merged = dict(schema)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Messages:
    """Every message (and enum) of the descriptor set by full name, with the comments of it and its fields."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}  # "pkg.Message" or "pkg.Message.field" -> comment
        self.required: set[str] = set()  # "pkg.Message.field" marked REQUIRED
        for file in files.file:
            comments = {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}
            # FileDescriptorProto: message_type = 4, enum_type = 5; DescriptorProto: field = 2, nested = 3, enum = 4
            for index, message in enumerate(file.message_type):
                self._add(file.package, message, (4, index), comments)
            for enum in file.enum_type:
                self.enums[f"{file.package}.{enum.name}"] = enum

    def _add(
        self,
        scope: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
    ) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name] = message
        if comment := comments.get(path):
            self.comments[name] = comment
        for index, field in enumerate(message.field):
            if comment := comments.get((*path, 2, index)):
                self.comments[f"{name}.{field.name}"] = comment
            if _is_required(field):
                self.required.add(f"{name}.{field.name}")
        for index, nested in enumerate(message.nested_type):
            self._add(name, nested, (*path, 3, index), comments)
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum

    def references(self, name: str) -> Iterator[str]:
        """Message types the fields of ``name`` use (map values included)."""
        for field in self.messages[name].field:
            if field.type == FieldProto.TYPE_MESSAGE:
                target = field.type_name.lstrip(".")
                entry = self.messages.get(target)
                if entry is not None and entry.options.map_entry:
                    yield from self.references(target)
                else:
                    yield target


def _component_name(full_name: str) -> str:
    return full_name.removeprefix(f"{API_PACKAGE}.")


def _describe(schema: Schema, comment: str | None) -> Schema:
    if comment:
        if "$ref" in schema:
            return {"$ref": schema["$ref"], "description": comment}
        return {**schema, "description": comment}
    return schema


class _Builder:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.index = _Messages(files)
        self.bindings = http_bindings(files)
        self.components: dict[str, Schema] = {}
        self.response_only = self._response_only_messages()

    def _reachable(self, roots: set[str]) -> set[str]:
        seen: set[str] = set()
        pending = list(roots)
        while pending:
            name = pending.pop()
            if name in seen or name not in self.index.messages or name in _WELL_KNOWN:
                continue
            seen.add(name)
            pending.extend(self.index.references(name))
        return seen

    def _response_only_messages(self) -> set[str]:
        requests = self._reachable({b.input_type for b in self.bindings})
        responses = self._reachable({b.output_type for b in self.bindings})
        return responses - requests

    # -- schemas ---------------------------------------------------------------------------------------

    def _field_schema(self, field: descriptor_pb2.FieldDescriptorProto, *, repeated_ok: bool = True) -> Schema:
        if field.type == FieldProto.TYPE_MESSAGE:
            target = field.type_name.lstrip(".")
            entry = self.index.messages.get(target)
            if entry is not None and entry.options.map_entry:
                value_field = next(f for f in entry.field if f.name == "value")
                return {"type": "object", "additionalProperties": self._field_schema(value_field, repeated_ok=False)}
            schema = self.message_ref(target)
        elif field.type == FieldProto.TYPE_ENUM:
            enum = self.index.enums.get(field.type_name.lstrip("."))
            schema = {"type": "string", "enum": [v.name for v in enum.value]} if enum else {"type": "string"}
        else:
            schema = dict(_SCALARS[field.type])
        if repeated_ok and field.label == FieldProto.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        return schema

    def message_ref(self, full_name: str) -> Schema:
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        name = _component_name(full_name)
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursion ends here
            self.components[name] = self._object_schema(full_name)
        return {"$ref": f"#/components/schemas/{name}"}

    def _has_presence(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        if field.proto3_optional or field.HasField("oneof_index"):
            return True
        if field.type != FieldProto.TYPE_MESSAGE or field.label == FieldProto.LABEL_REPEATED:
            return False
        entry = self.index.messages.get(field.type_name.lstrip("."))
        return not (entry is not None and entry.options.map_entry)

    def constrained_schema(self, message: str, field: descriptor_pb2.FieldDescriptorProto) -> Schema:
        """The field's schema with what the server refuses ruled out: non-empty if REQUIRED, the core's limits."""
        schema = self._field_schema(field)
        if "$ref" in schema:
            return schema
        if f"{message}.{field.name}" in self.index.required:
            if schema.get("type") == "string":
                schema["minLength"] = 1
            elif schema.get("type") == "object":
                schema["minProperties"] = 1
            elif schema.get("type") == "array":
                schema["minItems"] = 1
        return _merge(schema, _CONSTRAINTS.get(f"{message}.{field.name}", {}))

    def _object_schema(self, full_name: str, *, exclude: frozenset[str] = frozenset()) -> Schema:
        message = self.index.messages[full_name]
        properties = {
            field.json_name: _describe(
                self.constrained_schema(full_name, field), self.index.comments.get(f"{full_name}.{field.name}")
            )
            for field in message.field
            if field.name not in exclude
        }
        schema: Schema = {"type": "object"}
        if comment := self.index.comments.get(full_name):
            schema["description"] = comment
        schema["properties"] = properties
        if full_name in self.response_only:
            # The gateway prints every field without presence, defaults included.
            required = [f.json_name for f in message.field if not self._has_presence(f) and f.name not in exclude]
        else:
            required = [
                f.json_name
                for f in message.field
                if f"{full_name}.{f.name}" in self.index.required and f.name not in exclude
            ]
        if required:
            schema["required"] = required
        return schema

    # -- operations ------------------------------------------------------------------------------------

    def _request_fields(self, binding: HttpBinding) -> dict[str, descriptor_pb2.FieldDescriptorProto]:
        return {field.name: field for field in self.index.messages[binding.input_type].field}

    def operation(self, binding: HttpBinding) -> Schema:
        fields = self._request_fields(binding)
        bound = {variable.split(".")[0] for variable in binding.path_variables}
        parameters: list[Schema] = []
        for variable in binding.path_variables:
            field = fields[variable.split(".")[0]]
            parameters.append(
                {
                    "name": variable,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", **_CONSTRAINTS.get(f"{binding.input_type}.{field.name}", {})},
                    **self._description(binding.input_type, field.name),
                }
            )
        if binding.body != "*":
            for field in fields.values():
                if field.name in bound or field.name == binding.body or field.type == FieldProto.TYPE_MESSAGE:
                    continue
                parameters.append(
                    {
                        "name": field.json_name,
                        "in": "query",
                        "required": f"{binding.input_type}.{field.name}" in self.index.required,
                        "schema": self.constrained_schema(binding.input_type, field),
                        **self._description(binding.input_type, field.name),
                    }
                )
        operation: Schema = {
            "tags": [binding.service.removeprefix(f"{API_PACKAGE}.")],
            "operationId": f"{binding.service.removeprefix(f'{API_PACKAGE}.')}_{binding.method}",
        }
        if binding.comment:
            operation["summary"] = binding.comment.splitlines()[0]
            operation["description"] = binding.comment
        if parameters:
            operation["parameters"] = parameters
        if binding.body:
            if binding.body == "*":
                if bound:
                    body_schema = self._object_schema(binding.input_type, exclude=frozenset(bound))
                else:
                    body_schema = self.message_ref(binding.input_type)
            else:
                body_schema = self.constrained_schema(binding.input_type, fields[binding.body])
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
        errors = {**_ERROR_RESPONSES, **(_BODY_ERROR_RESPONSES if binding.body else {})}
        success = {
            "description": "Success.",
            "content": {"application/json": {"schema": self.message_ref(binding.output_type)}},
        }
        if binding.server_streaming:
            success = {
                # The gateway labels the stream application/json; each line is one complete object.
                "description": "A stream: one JSON object a line (newline-delimited JSON), as long as the RPC streams.",
                "content": {"application/json": {"schema": self.message_ref(binding.output_type)}},
            }
        operation["responses"] = {
            "200": success,
            **{status: {"$ref": f"#/components/responses/{_response_name(status)}"} for status in sorted(errors)},
        }
        operation["x-grpc-method"] = binding.grpc_path
        return operation

    def _description(self, message: str, field: str) -> Schema:
        comment = self.index.comments.get(f"{message}.{field}")
        return {"description": comment} if comment else {}


def _response_name(status: str) -> str:
    return "Error" if status == "default" else f"Error{status}"


def build_openapi(files: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the HTTP rules of ``files`` (comments need ``--include_source_info``)."""
    builder = _Builder(files)
    paths: dict[str, dict[str, Any]] = {}
    for binding in builder.bindings:
        path = paths.setdefault(binding.path, {})
        path[binding.verb.lower()] = builder.operation(binding)
    services = {}
    for file in files.file:
        if file.package != API_PACKAGE:
            continue
        comments = {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}
        for index, service in enumerate(file.service):
            services[service.name] = comments.get((6, index), "")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crm_hub REST API",
            "version": API_PACKAGE.rsplit(".", 1)[-1],
            "description": (
                "The REST surface of crm_hub, served by its Envoy gateway (gRPC-JSON transcoding onto the "
                "crm_hub.v1 services). Generated from proto/ by `python -m crm_hub.gateway generate`."
            ),
        },
        "tags": [{"name": name, "description": description} for name, description in sorted(services.items())],
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT with team_id and role (member or admin) claims.",
                }
            },
            "schemas": {"Error": _ERROR_SCHEMA, **dict(sorted(builder.components.items()))},
            "responses": {
                _response_name(status): {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                for status, description in sorted({**_ERROR_RESPONSES, **_BODY_ERROR_RESPONSES}.items())
            },
        },
    }


def render_openapi(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _fresh() -> str:
    files = descriptor_pb2.FileDescriptorSet.FromString(build_descriptor_set(include_source_info=True))
    return render_openapi(build_openapi(files))


def generate(target: Path = OPENAPI_PATH) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_fresh())


def check(target: Path = OPENAPI_PATH) -> list[str]:
    """Problems with the committed document (empty when it is current)."""
    if not target.exists():
        return [f"missing: {target}"]
    fresh, committed = _fresh(), target.read_text()
    if fresh == committed:
        return []
    diff = difflib.unified_diff(
        committed.splitlines(), fresh.splitlines(), "committed", "regenerated", lineterm="", n=1
    )
    return ["\n".join(list(diff)[:40])]
