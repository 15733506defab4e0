"""The spec's REST calls through the real Envoy, as a browser or a curl user sees them."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.gateway.conftest import connect_memorycrm, headers
from tests.support.memory_crm import MemoryCrm


async def test_status_lists_memorycrm_as_not_connected(http: httpx.AsyncClient, team_id: str) -> None:
    response = await http.get("/integrations/status", headers=headers(team_id, "member"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is True
    memorycrm = body["integrations"]["memorycrm"]
    # Defaults are printed (always_print_primitive_fields): false and 0 are there, not missing.
    assert memorycrm["connected"] is False
    assert memorycrm["reconnectRequired"] is False
    assert memorycrm["syncsTotal"] == 0
    assert memorycrm["state"] == "DISCONNECTED"
    assert "lastSync" not in memorycrm
    assert "error" not in memorycrm


async def test_created_lead_can_be_read_back_with_its_timeline(http: httpx.AsyncClient, team_id: str) -> None:
    created = await http.post(
        "/leads",
        json={"fields": {"email": "ada@example.com", "name": "Ada"}, "externalId": "form-1"},
        headers=headers(team_id, "member"),
    )
    assert created.status_code == 200, created.text
    assert created.json()["success"] is True
    assert created.json()["created"] is True
    lead_id = created.json()["lead"]["id"]

    read = await http.get(f"/leads/{lead_id}", headers=headers(team_id, "member"))
    assert read.status_code == 200
    lead = read.json()["lead"]
    assert lead["fields"] == {"email": "ada@example.com", "name": "Ada"}
    assert lead["externalId"] == "form-1"
    assert lead["createdAt"].endswith("Z")

    timeline = await http.get(f"/leads/{lead_id}/timeline", params={"pageSize": 10}, headers=headers(team_id))
    assert timeline.status_code == 200
    assert timeline.json() == {"success": True, "events": [], "nextPageToken": ""}


async def test_start_returns_the_consent_url_and_state(http: httpx.AsyncClient, team_id: str) -> None:
    response = await http.get("/integrations/memorycrm/start", headers=headers(team_id))
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["authUrl"].startswith("https://crm.invalid/authorize?")
    assert body["state"]
    assert body["state"] in body["authUrl"]


async def test_connected_crm_lists_fields_and_keeps_the_mapping(http: httpx.AsyncClient, team_id: str) -> None:
    await connect_memorycrm(http, team_id)
    fields = await http.get("/integrations/memorycrm/fields", headers=headers(team_id, "member"))
    assert fields.status_code == 200, fields.text
    email = next(field for field in fields.json()["fields"] if field["name"] == "email")
    assert email["required"] is True
    assert email["type"] == "email"

    saved = await http.post(
        "/integrations/memorycrm/mapping", json={"mapping": {"email": "email"}}, headers=headers(team_id)
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["mapping"] == {"email": "email"}
    read = await http.get("/integrations/memorycrm/mapping", headers=headers(team_id, "member"))
    assert read.json() == {"success": True, "mapping": {"email": "email"}}

    status = await http.get("/integrations/status", headers=headers(team_id, "member"))
    assert status.json()["integrations"]["memorycrm"]["connected"] is True


async def test_dry_run_query_parameter_reaches_the_rpc(
    http: httpx.AsyncClient, team_id: str, shared_crm: MemoryCrm
) -> None:
    await connect_memorycrm(http, team_id)
    mapped = await http.post(
        "/integrations/memorycrm/mapping", json={"mapping": {"email": "email"}}, headers=headers(team_id)
    )
    assert mapped.status_code == 200, mapped.text
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    lead = await http.post("/leads", json={"fields": {"email": email}}, headers=headers(team_id, "member"))
    lead_id = lead.json()["lead"]["id"]
    body = {"provider": "memorycrm", "duplicatePolicy": "update"}

    def crm_contacts() -> list[str]:
        return [cid for cid, properties in shared_crm.contacts.items() if properties.get("email") == email]

    for flag in ("true", "1"):
        preview = await http.post(
            f"/crm/sync/lead/{lead_id}?dryRun={flag}", json=body, headers=headers(team_id, "member")
        )
        assert preview.status_code == 200, preview.text
        result = preview.json()
        assert set(result) >= {"success", "contactId", "action", "message", "payload"}
        assert result["success"] is True
        assert result["dryRun"] is True
        assert result["action"] == "would_create"
        assert result["payload"] == {"email": email}
        assert crm_contacts() == []  # a preview writes nothing

    written = await http.post(f"/crm/sync/lead/{lead_id}?dryRun=false", json=body, headers=headers(team_id, "member"))
    assert written.status_code == 200, written.text
    assert written.json()["action"] == "created"
    assert written.json()["dryRun"] is False
    assert crm_contacts() == [written.json()["contactId"]]

    again = await http.post(f"/crm/sync/lead/{lead_id}?dryRun=0", json=body, headers=headers(team_id, "member"))
    assert again.json()["action"] == "unchanged"  # nothing changed since: nothing was sent
    assert again.json()["contactId"] == written.json()["contactId"]

    timeline = await http.get(f"/leads/{lead_id}/timeline", headers=headers(team_id, "member"))
    actions = [event["action"] for event in timeline.json()["events"]]
    assert actions[:2] == ["unchanged", "created"]  # newest first


@pytest.mark.parametrize(
    ("role", "method", "path", "body", "status", "reason"),
    [
        (None, "GET", "/integrations/status", None, 401, "TOKEN_MISSING"),
        (
            "member",
            "POST",
            "/integrations/memorycrm/mapping",
            {"mapping": {"email": "email"}},
            403,
            "PERMISSION_DENIED",
        ),
        ("admin", "GET", "/integrations/nocrm/start", None, 404, "PROVIDER_NOT_FOUND"),
        ("admin", "GET", "/integrations/status/start", None, 404, "PROVIDER_NOT_FOUND"),
        ("member", "GET", "/leads/0123456789abcdef", None, 404, None),
        ("member", "POST", "/crm/sync/lead/0123456789abcdef?dryRun=true", {"provider": "memorycrm"}, 404, None),
    ],
    ids=["no-token", "member-saves-mapping", "unknown-provider", "status-as-provider", "unknown-lead", "sync-unknown"],
)
async def test_rpc_errors_are_json_with_success_false_and_a_reason(
    http: httpx.AsyncClient,
    team_id: str,
    role: str | None,
    method: str,
    path: str,
    body: object,
    status: int,
    reason: str | None,
) -> None:
    response = await http.request(method, path, json=body, headers=headers(team_id, role) if role else {})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["success"] is False
    assert error["message"]
    assert error["reason"]
    if reason is not None:
        assert error["reason"] == reason
    # The google.rpc.Status underneath is kept: the gRPC code and the ErrorInfo it came from.
    assert error["code"] in (3, 5, 7, 16)
    infos = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert [info["reason"] for info in infos] == [error["reason"]]
    assert infos[0]["domain"] == "crm_hub"


async def test_invalid_lead_error_keeps_the_field_violations(http: httpx.AsyncClient, team_id: str) -> None:
    response = await http.post("/leads", json={"fields": {"email": "not-an-email"}}, headers=headers(team_id, "member"))
    assert response.status_code == 400
    error = response.json()
    assert (error["success"], error["reason"]) == (False, "LEAD_INVALID")
    bad_request = next(d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert [violation["field"] for violation in bad_request["fieldViolations"]] == ["fields[email]"]


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "reason"),
    [
        ("GET", "/no/such/path", None, 404, "NOT_FOUND"),
        ("PUT", "/integrations/status", None, 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/leads", b'{"fields": {"email": "a@example.com"', 400, "INVALID_JSON"),
        ("POST", "/leads", b"not json at all", 400, "INVALID_JSON"),
        ("POST", "/leads", b'{"fields": 5}', 400, "INVALID_ARGUMENT"),
        ("GET", "/integrations/status?verbose=1", None, 400, "UNKNOWN_QUERY_PARAMETER"),
        ("POST", "/crm/sync/lead/x?dryRun=banana", b'{"provider": "memorycrm"}', 400, "INVALID_ARGUMENT"),
        (
            "POST",
            "/integrations/memorycrm/callback",
            b'{"kind": "other", "code": "good-code", "state": "s"}',
            400,
            "BODY_FIELD_COLLISION",
        ),
        ("GET", "/leads/a?leadId=b", None, 400, "PATH_VARIABLE_IN_QUERY"),
        ("GET", "/integrations/memorycrm/fields?kind=other", None, 400, "PATH_VARIABLE_IN_QUERY"),
    ],
    ids=[
        "unknown-path",
        "unknown-verb",
        "truncated-json",
        "not-json",
        "wrong-json-shape",
        "unknown-query-parameter",
        "bad-boolean",
        "body-field-collides-with-path",
        "query-overrides-path-variable",
        "query-overrides-kind",
    ],
)
async def test_gateway_refusals_are_json_with_success_false_and_a_reason(
    http: httpx.AsyncClient,
    team_id: str,
    method: str,
    path: str,
    content: bytes | None,
    status: int,
    reason: str,
) -> None:
    response = await http.request(
        method, path, content=content, headers={**headers(team_id), "content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    error = response.json()
    assert error["success"] is False
    assert error["reason"] == reason
    assert error["message"]
    assert error["code"] == {400: 3, 404: 5, 405: 12}[status]
    assert error["details"] == [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "crm_hub", "metadata": {}}
    ]


async def test_unknown_body_fields_are_ignored(http: httpx.AsyncClient, team_id: str) -> None:
    # Documented transcoder behaviour (no option rejects them): the known fields still arrive.
    response = await http.post(
        "/leads", json={"fields": {"email": "zed@example.com"}, "colour": "blue"}, headers=headers(team_id, "member")
    )
    assert response.status_code == 200
    assert response.json()["lead"]["fields"] == {"email": "zed@example.com"}


async def test_successful_responses_keep_their_grpc_status_headers(http: httpx.AsyncClient, team_id: str) -> None:
    response = await http.get("/integrations/status", headers=headers(team_id, "member"))
    assert response.headers["grpc-status"] == "0"
