"""The public contract, read off the generated descriptors: REST routes, JSON names, access policy, __all__.

The gateway transcodes the spec's REST paths onto the RPCs through the google.api.http rules, so these rules
and the fields' JSON names *are* the REST API. A change here is a breaking change for REST clients.
"""

from __future__ import annotations

import importlib
import re
import types

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from crm_hub.core.caller import Role
from crm_hub.rpc.interceptors import METHOD_POLICY
from crm_hub.v1 import fields_pb2, integrations_pb2, leads_pb2, status_pb2, sync_pb2

SERVICES = [
    integrations_pb2.DESCRIPTOR.services_by_name["IntegrationsService"],
    fields_pb2.DESCRIPTOR.services_by_name["FieldsService"],
    sync_pb2.DESCRIPTOR.services_by_name["SyncService"],
    status_pb2.DESCRIPTOR.services_by_name["StatusService"],
    leads_pb2.DESCRIPTOR.services_by_name["LeadsService"],
]
METHODS: list[MethodDescriptor] = [method for service in SERVICES for method in service.methods]

#: The spec's REST surface and the sync engine's job paths: (verb, path, body, RPC).
REST_SURFACE = {
    ("GET", "/integrations/{kind}/start", "", "crm_hub.v1.IntegrationsService.StartOAuth"),
    ("POST", "/integrations/{kind}/callback", "*", "crm_hub.v1.IntegrationsService.CompleteOAuth"),
    ("DELETE", "/integrations/{kind}/disconnect", "", "crm_hub.v1.IntegrationsService.Disconnect"),
    ("GET", "/integrations/{kind}/fields", "", "crm_hub.v1.FieldsService.ListFields"),
    ("POST", "/integrations/{kind}/mapping", "*", "crm_hub.v1.FieldsService.SaveMapping"),
    ("GET", "/integrations/{kind}/mapping", "", "crm_hub.v1.FieldsService.GetMapping"),
    ("POST", "/crm/sync/lead/{lead_id}", "options", "crm_hub.v1.SyncService.SyncLead"),
    ("POST", "/crm/sync/leads", "options", "crm_hub.v1.SyncService.SyncLeads"),
    ("GET", "/crm/sync/jobs/{job_id}", "", "crm_hub.v1.SyncService.GetSyncJob"),
    ("GET", "/crm/sync/jobs", "", "crm_hub.v1.SyncService.ListSyncJobs"),
    ("POST", "/crm/sync/jobs/{job_id}/cancel", "*", "crm_hub.v1.SyncService.CancelSyncJob"),
    ("GET", "/crm/sync/jobs/{job_id}/results", "", "crm_hub.v1.SyncService.ListSyncJobResults"),
    ("GET", "/crm/sync/jobs/{job_id}/watch", "", "crm_hub.v1.SyncService.WatchSyncJob"),
    ("GET", "/integrations/status", "", "crm_hub.v1.StatusService.GetStatus"),
    ("GET", "/integrations/{kind}/settings", "", "crm_hub.v1.IntegrationsService.GetIntegrationSettings"),
    ("PATCH", "/integrations/{kind}/settings", "settings", "crm_hub.v1.IntegrationsService.UpdateIntegrationSettings"),
    ("POST", "/leads", "*", "crm_hub.v1.LeadsService.CreateLead"),
    ("GET", "/leads/{lead_id}", "", "crm_hub.v1.LeadsService.GetLead"),
    ("PATCH", "/leads/{lead_id}", "*", "crm_hub.v1.LeadsService.UpdateLead"),
    ("DELETE", "/leads/{lead_id}", "", "crm_hub.v1.LeadsService.DeleteLead"),
    ("GET", "/leads/{lead_id}/timeline", "", "crm_hub.v1.LeadsService.ListTimelineEvents"),
}

#: JSON names the spec's examples use, by the message that must carry them.
SPEC_JSON_NAMES = {
    integrations_pb2.StartOAuthResponse: {"success", "authUrl", "state"},
    integrations_pb2.CompleteOAuthRequest: {"code", "state"},
    integrations_pb2.CompleteOAuthResponse: {"success", "message"},
    integrations_pb2.DisconnectResponse: {"success", "message"},
    fields_pb2.ListFieldsResponse: {"success", "fields"},
    fields_pb2.CrmField: {"name", "label", "type", "required", "description"},
    fields_pb2.SaveMappingRequest: {"mapping"},
    fields_pb2.SaveMappingResponse: {"success", "message"},
    fields_pb2.GetMappingResponse: {"success", "mapping"},
    sync_pb2.SyncLeadRequest: {"dryRun", "options"},
    sync_pb2.SyncOptions: {"provider", "duplicatePolicy"},
    sync_pb2.SyncLeadResponse: {"success", "contactId", "action", "message", "payload"},
    status_pb2.GetStatusResponse: {"success", "integrations"},
    status_pb2.IntegrationStatus: {"connected", "lastSync", "error"},
    leads_pb2.CreateLeadRequest: {"externalId", "fields"},
    leads_pb2.CreateLeadResponse: {"success", "lead"},
    leads_pb2.GetLeadResponse: {"success", "lead"},
    leads_pb2.Lead: {"id", "externalId", "fields"},
}

ADMIN_METHODS = {
    "/crm_hub.v1.IntegrationsService/StartOAuth",
    "/crm_hub.v1.IntegrationsService/CompleteOAuth",
    "/crm_hub.v1.IntegrationsService/Disconnect",
    "/crm_hub.v1.FieldsService/SaveMapping",
    "/crm_hub.v1.LeadsService/DeleteLead",
    "/crm_hub.v1.IntegrationsService/UpdateIntegrationSettings",
}

_PATH_VARIABLE = re.compile(r"{([^}=]+)(?:=[^}]*)?}")


def _rule(method: MethodDescriptor) -> http_pb2.HttpRule:
    return method.GetOptions().Extensions[annotations_pb2.http]


def _route(rule: http_pb2.HttpRule) -> tuple[str, str]:
    verb = rule.WhichOneof("pattern")
    assert verb is not None
    if verb == "custom":
        return rule.custom.kind, rule.custom.path
    return verb.upper(), getattr(rule, verb)


def _field_at(message: Descriptor, path: str) -> FieldDescriptor | None:
    """The field a dotted path (``a.b``) names in ``message``, or None."""
    field: FieldDescriptor | None = None
    for part in path.split("."):
        if message is None:
            return None
        field = message.fields_by_name.get(part)
        if field is None:
            return None
        message = field.message_type
    return field


def test_there_are_five_services_with_twenty_one_rpcs() -> None:
    assert [service.full_name for service in SERVICES] == [
        "crm_hub.v1.IntegrationsService",
        "crm_hub.v1.FieldsService",
        "crm_hub.v1.SyncService",
        "crm_hub.v1.StatusService",
        "crm_hub.v1.LeadsService",
    ]
    assert len(METHODS) == 21


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.full_name)
def test_every_rpc_has_a_rest_route(method: MethodDescriptor) -> None:
    assert method.GetOptions().HasExtension(annotations_pb2.http)
    assert _rule(method).WhichOneof("pattern") is not None


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.full_name)
def test_route_variables_and_body_name_fields_of_the_request(method: MethodDescriptor) -> None:
    rule = _rule(method)
    _, path = _route(rule)

    for variable in _PATH_VARIABLE.findall(path):
        field = _field_at(method.input_type, variable)
        assert field is not None, f"{path} binds {variable!r}, not a field of {method.input_type.full_name}"
        assert field.type != FieldDescriptor.TYPE_MESSAGE, f"{variable!r} must be a scalar to sit in a path"
    if rule.body not in ("", "*"):
        assert _field_at(method.input_type, rule.body) is not None, f"body {rule.body!r} is not a request field"


def test_rest_surface_is_exactly_the_spec() -> None:
    routes = set()
    for method in METHODS:
        rule = _rule(method)
        verb, path = _route(rule)
        routes.add((verb, path, rule.body, method.full_name))
        assert not rule.additional_bindings, f"{method.full_name} has extra routes the spec does not list"

    assert routes == REST_SURFACE


def test_get_and_delete_routes_carry_no_body() -> None:
    bodies = {
        method.full_name: _rule(method).body for method in METHODS if _route(_rule(method))[0] in ("GET", "DELETE")
    }

    assert set(bodies.values()) == {""}


@pytest.mark.parametrize("message", list(SPEC_JSON_NAMES), ids=lambda message: message.DESCRIPTOR.name)
def test_json_names_the_spec_shows_exist(message: type) -> None:
    json_names = {field.json_name for field in message.DESCRIPTOR.fields}

    assert SPEC_JSON_NAMES[message] <= json_names


def test_crm_field_list_is_named_fields_in_the_fields_response() -> None:
    field = fields_pb2.ListFieldsResponse.DESCRIPTOR.fields_by_name["fields"]

    assert field.json_name == "fields"
    assert field.message_type.full_name == "crm_hub.v1.CrmField"


def test_every_rpc_has_an_access_policy_and_nothing_else_does() -> None:
    rpc_paths = {f"/{method.containing_service.full_name}/{method.name}" for method in METHODS}

    assert set(METHOD_POLICY) == rpc_paths


def test_only_connecting_disconnecting_changing_settings_or_a_mapping_and_deleting_a_lead_need_an_admin() -> None:
    admin_only = {path for path, (role, _) in METHOD_POLICY.items() if role is Role.ADMIN}

    assert admin_only == ADMIN_METHODS


def test_every_access_policy_names_an_action_for_the_refusal_message() -> None:
    actions = {path: action for path, (_, action) in METHOD_POLICY.items()}

    assert all(action.strip() for action in actions.values()), actions


def _public_names_defined_in(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }


@pytest.mark.parametrize("module_name", ["crm_hub.providers", "crm_hub.errors", "crm_hub.hookspecs"])
def test_public_modules_declare_all_and_every_name_in_it_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)

    exported = module.__all__

    assert isinstance(exported, list | tuple)
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    assert [name for name in exported if not hasattr(module, name)] == []


@pytest.mark.parametrize("module_name", ["crm_hub.providers", "crm_hub.errors"])
def test_every_public_class_and_function_is_exported(module_name: str) -> None:
    module = importlib.import_module(module_name)

    assert _public_names_defined_in(module) <= set(module.__all__)


def test_hookspecs_export_the_markers_plugin_authors_need() -> None:
    hookspecs = importlib.import_module("crm_hub.hookspecs")

    assert set(hookspecs.__all__) >= {"hookimpl", "hookspec"}
    assert hookspecs.hookimpl.project_name == hookspecs.hookspec.project_name == "crm_hub"


def test_the_missing_settings_text_names_each_variable_and_agrees_in_number() -> None:
    from crm_hub.providers import missing_settings_problem

    assert missing_settings_problem("ToyCRM", []) is None
    assert missing_settings_problem("ToyCRM", ["TOYCRM_CLIENT_ID"]) == (
        "ToyCRM is not configured: TOYCRM_CLIENT_ID is not set. Set it, or leave the plugin out with CRM_HUB_PLUGINS."
    )
    assert missing_settings_problem("ToyCRM", ["TOYCRM_CLIENT_ID", "TOYCRM_REDIRECT_URL"]) == (
        "ToyCRM is not configured: TOYCRM_CLIENT_ID, TOYCRM_REDIRECT_URL are not set. "
        "Set them, or leave the plugin out with CRM_HUB_PLUGINS."
    )
