"""Updating and deleting a lead over REST through the real Envoy: PATCH merges the JSON body's fields into the
lead, DELETE removes it (admin only), and the verbs a lead's path does not serve are 405 naming those it does."""

from __future__ import annotations

import uuid

import httpx

from tests.gateway.conftest import headers


async def test_a_lead_is_patched_then_deleted_over_rest(http: httpx.AsyncClient) -> None:
    team = f"team-{uuid.uuid4().hex[:10]}"
    created = await http.post(
        "/leads", json={"fields": {"email": "rest@example.com", "name": "Rest"}}, headers=headers(team, "member")
    )
    lead_id = created.json()["lead"]["id"]

    patched = await http.patch(
        f"/leads/{lead_id}", json={"fields": {"name": "", "company": "Acme"}}, headers=headers(team, "member")
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["changed"] is True
    assert patched.json()["lead"]["fields"] == {"email": "rest@example.com", "company": "Acme"}

    refused = await http.delete(f"/leads/{lead_id}", headers=headers(team, "member"))
    assert (refused.status_code, refused.json()["reason"]) == (403, "PERMISSION_DENIED")

    deleted = await http.delete(f"/leads/{lead_id}", headers=headers(team, "admin"))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["success"] is True
    assert (await http.get(f"/leads/{lead_id}", headers=headers(team, "member"))).status_code == 404


async def test_an_invalid_patch_is_a_400_naming_the_field(http: httpx.AsyncClient) -> None:
    team = f"team-{uuid.uuid4().hex[:10]}"
    created = await http.post("/leads", json={"fields": {"email": "x@example.com"}}, headers=headers(team, "member"))
    lead_id = created.json()["lead"]["id"]

    bad = await http.patch(f"/leads/{lead_id}", json={"fields": {"email": "nope"}}, headers=headers(team, "member"))

    assert (bad.status_code, bad.json()["reason"]) == (400, "LEAD_INVALID")
    assert "fields[email]" in bad.text


async def test_a_verb_the_leads_path_does_not_serve_is_405_naming_the_ones_it_does(http: httpx.AsyncClient) -> None:
    answer = await http.put(f"/leads/{uuid.uuid4().hex}", json={}, headers=headers("team-verbs", "member"))

    assert answer.status_code == 405
    assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "PATCH", "DELETE"}
