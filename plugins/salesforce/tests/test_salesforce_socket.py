"""The fake on a real socket (uvicorn on 127.0.0.1), talked to by the provider over TCP, and as a process."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from crm_hub.providers import ContactInput
from salesforce_support import CLIENT_ID, CLIENT_SECRET, REDIRECT_URL, Clock, make_fake, pkce_pair

from crm_hub_salesforce import SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import serving

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1 only: never let a proxy setting route these requests elsewhere."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


async def test_the_provider_connects_finds_and_writes_over_tcp(clock: Clock) -> None:
    fake = make_fake(clock)
    async with serving(fake) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        settings = SalesforceSettings(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_url=REDIRECT_URL, login_url=base_url
        )
        provider = SalesforceProvider(settings=settings, timeout=5.0)  # the real network transport
        try:
            verifier, challenge = pkce_pair()
            async with httpx.AsyncClient() as browser:
                response = await browser.get(provider.authorization_url(state="s", code_challenge=challenge))
            code = httpx.URL(response.headers["location"]).params["code"]
            tokens = await provider.exchange_code(code=code, code_verifier=verifier)

            [created] = await provider.create_contacts(
                tokens, [ContactInput({"LastName": "Tcp"}, email="t@example.com")]
            )
            found = await provider.find_contacts_by_email(tokens, ["T@example.com"])
        finally:
            await provider.aclose()

    assert tokens.instance_url == base_url
    assert created.ok
    assert created.created
    assert found == {"t@example.com": [created.contact_id]}
    assert provider.last_api_usage == (2, 100_000)
    assert {call.host for call in fake.api_calls()} == {base_url.removeprefix("http://")}


def test_python_dash_m_serves_the_fake_on_a_free_port() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "crm_hub_salesforce.fake", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("fake Salesforce listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.get(f"{base_url}/services/data/v58.0/sobjects/Contact/describe", trust_env=False)
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert response.status_code == 401  # up, and wanting a session
        assert response.headers["Sforce-Limit-Info"] == "api-usage=0/100000"
    finally:
        process.terminate()
        process.wait(timeout=10)
