"""The distribution plugs into crm_hub through its entry point, configured from the environment."""

from __future__ import annotations

import importlib.metadata

import pytest
from crm_hub.plugins import ENTRY_POINT_GROUP, PluginHost

import crm_hub_hubspot
import crm_hub_hubspot.fake
from crm_hub_hubspot import HubSpotProvider, HubSpotSettings

ENVIRONMENT = {
    "HUBSPOT_CLIENT_ID": "env-client-id",
    "HUBSPOT_CLIENT_SECRET": "env-client-secret",
    "HUBSPOT_REDIRECT_URL": "https://crm-hub.test/oauth/hubspot/callback",
}


def test_the_entry_point_names_the_plugin_module() -> None:
    [entry_point] = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "hubspot"]

    assert entry_point.value == "crm_hub_hubspot.plugin"
    assert entry_point.dist is not None
    assert entry_point.dist.name == "crm-hub-hubspot"


async def test_the_plugin_host_loads_a_hubspot_provider_configured_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HUBSPOT_API_BASE_URL", "http://127.0.0.1:9/")

    provider = PluginHost(allowlist={"hubspot"}).providers().get("hubspot")

    try:
        assert isinstance(provider, HubSpotProvider)
        assert provider.label == "HubSpot"
        assert provider.settings.client_id == "env-client-id"
        assert provider.settings.api_base_url == "http://127.0.0.1:9"
        assert provider.settings.authorize_url == "https://app.hubspot.com/oauth/authorize"
        assert provider.capabilities.max_batch_size == 100
        assert provider.capabilities.upsert_by_email
    finally:
        await provider.aclose()


def test_missing_settings_are_named_and_never_guessed() -> None:
    settings = HubSpotSettings.from_env({"HUBSPOT_CLIENT_ID": "id"})

    assert settings.missing == ("HUBSPOT_CLIENT_SECRET", "HUBSPOT_REDIRECT_URL")
    assert settings.problem is not None
    assert "HUBSPOT_CLIENT_SECRET, HUBSPOT_REDIRECT_URL are not set" in settings.problem
    assert HubSpotProvider(settings=settings).configuration_problem() == settings.problem
    assert HubSpotProvider(settings=HubSpotSettings.from_env(ENVIRONMENT)).configuration_problem() is None


def test_the_client_secret_stays_out_of_repr() -> None:
    settings = HubSpotSettings.from_env(ENVIRONMENT)

    assert "env-client-secret" not in repr(settings)
    assert "env-client-id" in repr(settings)


def test_public_names() -> None:
    assert crm_hub_hubspot.__all__ == [
        "SCOPES",
        "HubSpotProvider",
        "HubSpotSettings",
        "classify",
        "to_hubspot_value",
    ]
    assert crm_hub_hubspot.fake.__all__ == [
        "CONTACT_PROPERTIES",
        "DEFAULT_SCOPES",
        "Call",
        "FakeContact",
        "FakeHubSpot",
        "PropertyError",
        "contact_property",
        "serving",
    ]
