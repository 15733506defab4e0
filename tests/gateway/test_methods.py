"""A path the API serves, asked with a verb it does not serve, is 405 with ``Allow``; an unknown path stays 404."""

from __future__ import annotations

import httpx
import pytest

from crm_hub.gateway.descriptors import load_descriptor_set
from crm_hub.gateway.http_rules import http_bindings
from tests.gateway.conftest import assert_gateway_error, headers

LEAD_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/integrations/status", "GET"),
        ("DELETE", "/leads", "POST"),
        ("GET", "/leads", "POST"),
        ("POST", f"/leads/{LEAD_ID}", "DELETE, GET, PATCH"),
        ("PATCH", "/integrations/memorycrm/mapping", "GET, POST"),
        ("POST", "/integrations/memorycrm/disconnect", "DELETE"),
        ("GET", f"/crm/sync/lead/{LEAD_ID}", "POST"),
        ("OPTIONS", f"/leads/{LEAD_ID}/timeline", "GET"),
        ("PUT", "/integrations/status/", "GET"),  # trailing slashes match as the transcoder matches them
        ("POST", "/integrations/status/start", "GET"),  # {kind} = "status"
    ],
)
async def test_unserved_verb_is_405_method_not_allowed_with_allow_listing_the_served_verbs(
    http: httpx.AsyncClient, team_id: str, method: str, path: str, allow: str
) -> None:
    response = await http.request(method, path, headers=headers(team_id))
    error = assert_gateway_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == allow
    assert allow in error["message"]


async def test_head_is_405_with_allow_and_no_body(http: httpx.AsyncClient, team_id: str) -> None:
    response = await http.head("/integrations/status", headers=headers(team_id))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.content == b""


@pytest.mark.parametrize("path", ["/no/such/path", "/leads/a/b/c", "//leads", "/Leads"])
async def test_unknown_path_is_still_404_not_found(http: httpx.AsyncClient, team_id: str, path: str) -> None:
    response = await http.request("PUT", path, headers=headers(team_id))
    assert_gateway_error(response, 404, "NOT_FOUND")


async def test_every_verb_the_api_serves_gets_past_the_gateway(http: httpx.AsyncClient, team_id: str) -> None:
    checked = set()
    for binding in http_bindings(load_descriptor_set()):
        path = binding.path.replace("{kind}", "memorycrm").replace("{lead_id}", LEAD_ID).replace("{job_id}", LEAD_ID)
        body = {"provider": "memorycrm"} if binding.body else None
        response = await http.request(binding.verb, path, json=body, headers=headers(team_id))
        # Answered by the server (whatever it says of these made-up values), not refused by the gateway.
        assert "x-envoy-upstream-service-time" in response.headers, (binding, response.text)
        checked.add((binding.verb, binding.path))
    assert len(checked) == 21
