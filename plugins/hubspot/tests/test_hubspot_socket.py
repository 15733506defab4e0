"""The fake on a real socket (uvicorn on 127.0.0.1), driven by the provider over real HTTP."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from crm_hub.errors import Unavailable
from crm_hub.providers import ContactInput
from hubspot_support import CLIENT_ID, CLIENT_SECRET, REDIRECT_URL, s256

from crm_hub_hubspot.fake import FakeHubSpot, serving


async def test_the_provider_connects_writes_and_finds_contacts_over_a_socket() -> None:
    fake = FakeHubSpot(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URL)
    async with serving(fake) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        provider = fake.provider(base_url=base_url, timeout=5.0)
        try:
            verifier = secrets.token_urlsafe(48)
            async with httpx.AsyncClient() as browser:
                consent = await browser.get(provider.authorization_url(state="st", code_challenge=s256(verifier)))
            code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
            tokens = await provider.exchange_code(code=code, code_verifier=verifier)

            [created] = await provider.create_contacts(
                tokens, [ContactInput(properties={"email": "ada@example.com", "firstname": "Ada"})]
            )
            found = await provider.find_contacts_by_email(tokens, ["ADA@example.com", "bob@example.com"])

            impatient = fake.provider(base_url=base_url, timeout=0.2)
            fake.timeout_next(delay=0.4)
            try:
                with pytest.raises(Unavailable, match="did not answer in time"):  # httpx's read timeout, for real
                    await impatient.list_fields(tokens)
            finally:
                await impatient.aclose()
        finally:
            await provider.aclose()

    assert created.created
    assert found == {"ada@example.com": [str(created.contact_id)], "bob@example.com": []}
    assert [call.path for call in fake.calls][:4] == [
        "/oauth/authorize",
        "/oauth/v1/token",
        "/crm/v3/objects/contacts/batch/create",
        "/crm/v3/objects/contacts/batch/read",
    ]


async def test_python_dash_m_serves_the_fake_on_the_port_it_prints() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crm_hub_hubspot.fake",
        "--port",
        "0",
        "--log-level",
        "warning",
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=10)).decode()
        base_url = line.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=base_url) as client:
            answer = await client.get("/crm/v3/properties/contacts")
        assert answer.status_code == 401
        assert answer.json()["category"] == "INVALID_AUTHENTICATION"
    finally:
        process.terminate()
        await process.wait()
