"""Packaging: the entry point a crm_hub host loads, and the public names of the package."""

from __future__ import annotations

import importlib.metadata

import pytest
from crm_hub.plugins import ENTRY_POINT_GROUP, PluginHost
from crm_hub.providers import CrmProvider

import crm_hub_salesforce
import crm_hub_salesforce.fake
from crm_hub_salesforce import SalesforceProvider

_ENV = {
    "SALESFORCE_CLIENT_ID": "id",
    "SALESFORCE_CLIENT_SECRET": "secret",
    "SALESFORCE_REDIRECT_URL": "https://crm-hub.example.com/oauth/salesforce/callback",
}


def test_the_distribution_declares_the_crm_hub_entry_point() -> None:
    [entry_point] = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "salesforce"]

    assert entry_point.value == "crm_hub_salesforce.plugin"
    assert entry_point.dist is not None
    assert entry_point.dist.name == "crm-hub-salesforce"


async def test_a_host_loads_the_provider_through_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SALESFORCE_LOGIN_URL", raising=False)
    host = PluginHost(load_default_plugins=False, allowlist={"crm-hub-salesforce"})

    provider = host.providers().get("salesforce")

    assert isinstance(provider, SalesforceProvider)
    assert provider.label == "Salesforce"
    assert host.providers().origin("salesforce").distribution == "crm-hub-salesforce"
    assert provider.settings.login_url == "https://login.salesforce.com"
    await provider.aclose()


def test_an_unconfigured_provider_loads_and_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    host = PluginHost(load_default_plugins=False, allowlist={"salesforce"})

    problem = host.providers().get("salesforce").configuration_problem()
    assert problem is not None
    assert "SALESFORCE_CLIENT_ID" in problem


def test_capabilities_say_what_salesforce_does_natively() -> None:
    capabilities = SalesforceProvider.capabilities

    assert (SalesforceProvider.name, capabilities.max_batch_size) == ("salesforce", 200)
    assert capabilities.upsert_by_email is False
    assert capabilities.pkce is True
    assert capabilities.rotates_refresh_tokens is True
    assert issubclass(SalesforceProvider, CrmProvider)


def test_public_names() -> None:
    assert crm_hub_salesforce.__all__ == [
        "DEFAULT_API_VERSION",
        "DEFAULT_LOGIN_URL",
        "SCOPES",
        "TYPE_MAP",
        "DailyApiLimitReached",
        "SalesforceProvider",
        "SalesforceSettings",
        "classify",
        "record_error",
        "to_salesforce_value",
    ]
    assert all(hasattr(crm_hub_salesforce, name) for name in crm_hub_salesforce.__all__)
    assert all(hasattr(crm_hub_salesforce.fake, name) for name in crm_hub_salesforce.fake.__all__)
