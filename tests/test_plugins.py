"""crm_hub.plugins: the host that loads provider plugins (entry points or in-process) and checks what they register."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar

import pytest

from crm_hub import hookspecs
from crm_hub.errors import ConfigurationError, NotFound
from crm_hub.hookspecs import hookimpl
from crm_hub.notifications import Notification, Notifier
from crm_hub.plugins import LoadedPlugin, PluginHost
from crm_hub.providers import CrmProvider
from crm_hub.sandbox import Sandbox
from tests.support.fake_distribution import FakeSite, fake_site_in
from tests.support.memory_crm import MemoryCrm, MemoryCrmPlugin
from tests.support.stub_providers import RegisteringNotifiers, RegisteringPlugin, provider_named


@pytest.fixture
def host() -> PluginHost:
    """A host that loads neither entry points nor the built-in plugins: only what a test registers."""
    return PluginHost(load_entry_points=False, load_default_plugins=False)


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    with fake_site_in(tmp_path, monkeypatch) as site:
        yield site


# -- register_providers ---------------------------------------------------------------------------


def test_hook_register_providers_collects_every_plugins_providers(host: PluginHost) -> None:
    memory = MemoryCrm()
    host.register(MemoryCrmPlugin(memory), name="memory", distribution="crm-hub-memory", version="0.0.1")
    host.register(RegisteringPlugin(provider_named("alpha"), provider_named("beta")), name="greek")

    registry = host.providers()

    assert registry.names() == ["alpha", "beta", "memorycrm"]
    assert len(registry) == 3
    assert [provider.name for provider in registry] == ["alpha", "beta", "memorycrm"]
    assert registry.get("memorycrm") is memory
    assert registry.origin("memorycrm") == LoadedPlugin("memory", "crm-hub-memory", "0.0.1")
    assert registry.origin("beta").name == "greek"


class _RecordingNotifier(Notifier):
    name: ClassVar[str] = "recorder"

    def __init__(self) -> None:
        self.received: list[Notification] = []

    async def notify(self, notification: Notification) -> None:
        self.received.append(notification)


def test_hook_register_notifiers_collects_notifiers_by_name(host: PluginHost) -> None:
    recorder = _RecordingNotifier()
    host.register(RegisteringNotifiers(recorder), name="recording")

    assert host.notifiers() == [recorder]


def test_hook_register_notifiers_refuses_two_notifiers_with_one_name(host: PluginHost) -> None:
    host.register(RegisteringNotifiers(_RecordingNotifier()), name="first")
    host.register(RegisteringNotifiers(_RecordingNotifier()), name="second")

    with pytest.raises(ConfigurationError, match=r"'recorder' is registered twice.*'first'.*'second'"):
        host.notifiers()


def test_hook_register_notifiers_refuses_a_provider_posing_as_a_notifier(host: PluginHost) -> None:
    host.register(RegisteringNotifiers(provider_named("hubspot")), name="confused")

    with pytest.raises(ConfigurationError, match="not a Notifier"):
        host.notifiers()


class _ToySandbox(Sandbox):
    name: ClassVar[str] = "toycrm"

    @asynccontextmanager
    async def serve(self, *, host: str, redirect_url: str) -> AsyncIterator[Mapping[str, str]]:
        yield {"TOYCRM_API_BASE_URL": f"http://{host}:1", "TOYCRM_REDIRECT_URL": redirect_url}


class _RegisteringSandboxes:
    def __init__(self, *sandboxes: object) -> None:
        self.sandboxes = sandboxes

    @hookimpl
    def register_sandboxes(self, register: Callable[[Sandbox], None]) -> None:
        for sandbox in self.sandboxes:
            register(sandbox)  # type: ignore[arg-type]


async def test_hook_register_sandboxes_collects_sandboxes_that_yield_their_settings(host: PluginHost) -> None:
    host.register(_RegisteringSandboxes(_ToySandbox()), name="toy")

    [sandbox] = host.sandboxes()
    async with sandbox.serve(host="127.0.0.1", redirect_url="http://127.0.0.1:8080/oauth/toycrm/callback") as env:
        assert env["TOYCRM_REDIRECT_URL"] == "http://127.0.0.1:8080/oauth/toycrm/callback"


def test_hook_register_sandboxes_refuses_two_sandboxes_for_one_provider(host: PluginHost) -> None:
    host.register(_RegisteringSandboxes(_ToySandbox(), _ToySandbox()), name="toy")

    with pytest.raises(ConfigurationError, match="'toycrm' is registered twice"):
        host.sandboxes()


def test_built_in_slack_notifier_is_registered_as_an_ordinary_plugin() -> None:
    host = PluginHost(load_entry_points=False)

    assert "slack" in [notifier.name for notifier in host.notifiers()]
    assert any(plugin.distribution == "crm-hub" for plugin in host.plugins())


def test_registered_plugins_are_listed_by_name_with_their_origin(host: PluginHost) -> None:
    host.register(RegisteringPlugin(provider_named("zeta")), name="zeta-plugin")
    host.register(MemoryCrmPlugin(), name="memory", distribution="crm-hub-memory", version="0.0.1")

    assert host.plugins() == [
        LoadedPlugin(name="memory", distribution="crm-hub-memory", version="0.0.1"),
        LoadedPlugin(name="zeta-plugin", distribution="", version=""),
    ]


def test_hook_implementation_may_accept_a_subset_of_the_parameters(host: PluginHost) -> None:
    # Implementations may accept a subset of a hook's parameters; this one takes none and registers nothing.
    class Quiet:
        @staticmethod
        @hookimpl
        def register_providers() -> None:
            return None

    host.register(Quiet(), name="quiet")

    assert host.providers().names() == []


def test_unknown_provider_is_not_found_naming_the_available_ones(host: PluginHost) -> None:
    host.register(RegisteringPlugin(provider_named("hubspot"), provider_named("salesforce")), name="crms")

    with pytest.raises(NotFound) as caught:
        host.providers().get("pipedrive")

    assert caught.value.message == "Unknown provider pipedrive. Available providers: hubspot, salesforce."
    assert caught.value.reason == "PROVIDER_NOT_FOUND"
    assert caught.value.metadata == {"provider": "pipedrive", "available": "hubspot,salesforce"}


def test_unknown_provider_with_none_installed_says_no_plugin_is_installed(host: PluginHost) -> None:
    with pytest.raises(NotFound) as caught:
        host.providers().get("hubspot")

    assert "no provider plugin is installed" in caught.value.message


def test_unknown_provider_name_that_is_not_a_valid_name_is_quoted_and_truncated(host: PluginHost) -> None:
    hostile = "../../etc/passwd " + "x" * 100

    with pytest.raises(NotFound) as caught:
        host.providers().get(hostile)

    assert repr(hostile[:40]) in caught.value.message
    assert "x" * 41 not in caught.value.message


def test_two_plugins_registering_the_same_provider_name_is_an_error_naming_both(host: PluginHost) -> None:
    host.register(RegisteringPlugin(provider_named("hubspot")), name="crm-hub-hubspot")
    host.register(RegisteringPlugin(provider_named("hubspot")), name="hubspot-fork")

    with pytest.raises(ConfigurationError) as caught:
        host.providers()

    assert "'hubspot' is registered twice" in caught.value.message
    assert "'crm-hub-hubspot'" in caught.value.message
    assert "'hubspot-fork'" in caught.value.message


@pytest.mark.parametrize("name", ["Hub Spot", "HubSpot", "hub-spot", "1crm", "", "a" * 33])
def test_provider_with_an_invalid_name_is_a_configuration_error(host: PluginHost, name: str) -> None:
    host.register(RegisteringPlugin(provider_named(name)), name="badly-named")

    with pytest.raises(ConfigurationError) as caught:
        host.providers()

    assert repr(name) in caught.value.message
    assert "'badly-named'" in caught.value.message


@pytest.mark.parametrize("thing", [object(), "hubspot", MemoryCrm], ids=["object", "string", "class-not-instance"])
def test_registering_something_that_is_not_a_provider_instance_is_a_configuration_error(
    host: PluginHost, thing: object
) -> None:
    host.register(RegisteringPlugin(thing), name="confused")

    with pytest.raises(ConfigurationError, match=r"'confused' registered .*not a CrmProvider"):
        host.providers()


def test_misspelled_hook_fails_loudly_when_plugins_load(host: PluginHost) -> None:
    class Typo:
        @hookimpl
        def register_provider(self, register: object) -> None:  # sic: the hook is register_providers
            raise AssertionError("never called")

    host.register(Typo(), name="typo")

    with pytest.raises(ConfigurationError, match="unknown hook 'register_provider'"):
        host.providers()


def test_hook_implementation_asking_for_an_unknown_argument_is_refused_at_registration(host: PluginHost) -> None:
    class Greedy:
        @hookimpl
        def register_providers(self, register: object, database: object) -> None:
            raise AssertionError("never called")

    with pytest.raises(ConfigurationError, match="database"):
        host.register(Greedy(), name="greedy")


def test_unregistered_plugin_no_longer_provides(host: PluginHost) -> None:
    host.register(RegisteringPlugin(provider_named("alpha")), name="first")
    host.register(RegisteringPlugin(provider_named("beta")), name="second")
    assert host.providers().names() == ["alpha", "beta"]

    host.unregister("first")

    assert host.providers().names() == ["beta"]
    assert [plugin.name for plugin in host.plugins()] == ["second"]
    with pytest.raises(NotFound, match="Available providers: beta"):
        host.providers().get("alpha")


def test_providers_are_collected_once_and_reused(host: PluginHost) -> None:
    host.register(RegisteringPlugin(provider_named("alpha")), name="first")

    assert host.providers() is host.providers()
    assert host.providers().get("alpha") is host.providers().get("alpha")


# -- Entry points ---------------------------------------------------------------------------------


def test_installed_distribution_is_loaded_through_its_entry_point(fake_site: FakeSite) -> None:
    module = fake_site.install("crm-hub-fakecrm", version="1.2.3", entry_point="fakecrm", provider="fakecrm")
    fake_site.activate()

    # The allowlist keeps whatever else is installed in this environment out of the way.
    host = PluginHost(load_entry_points=True, load_default_plugins=False, allowlist=["crm-hub-fakecrm"])

    assert host.plugins() == [LoadedPlugin(name="fakecrm", distribution="crm-hub-fakecrm", version="1.2.3")]
    assert isinstance(host.providers().get("fakecrm"), CrmProvider)
    assert host.providers().origin("fakecrm").version == "1.2.3"
    assert module in sys.modules


def test_allowlist_by_distribution_or_entry_point_name_loads_only_those(fake_site: FakeSite) -> None:
    fake_site.install("crm-hub-alpha", entry_point="alpha", provider="alpha")
    fake_site.install("crm-hub-beta", entry_point="beta", provider="beta")
    gamma_module = fake_site.install("crm-hub-gamma", entry_point="gamma", provider="gamma")
    fake_site.activate()

    host = PluginHost(load_entry_points=True, load_default_plugins=False, allowlist=["crm-hub-alpha", "beta"])

    assert [plugin.name for plugin in host.plugins()] == ["alpha", "beta"]
    assert host.providers().names() == ["alpha", "beta"]
    assert gamma_module not in sys.modules, "a plugin left out by the allowlist must not even be imported"


def test_empty_allowlist_loads_no_plugin(fake_site: FakeSite) -> None:
    module = fake_site.install("crm-hub-alpha", entry_point="alpha", provider="alpha")
    fake_site.activate()

    host = PluginHost(load_entry_points=True, load_default_plugins=False, allowlist=[])

    assert host.plugins() == []
    assert host.providers().names() == []
    assert module not in sys.modules


def test_entry_points_are_not_loaded_when_turned_off(fake_site: FakeSite) -> None:
    fake_site.install("crm-hub-alpha", entry_point="alpha", provider="alpha")
    fake_site.activate()

    host = PluginHost(load_entry_points=False, load_default_plugins=False)

    assert host.plugins() == []


def test_plugin_that_fails_to_import_is_a_configuration_error_naming_it(fake_site: FakeSite) -> None:
    fake_site.install("crm-hub-broken", entry_point="broken", source="raise RuntimeError('missing API key module')\n")
    fake_site.activate()

    host = PluginHost(load_entry_points=True, load_default_plugins=False, allowlist=["broken"])

    with pytest.raises(ConfigurationError) as caught:
        host.providers()

    assert "'broken'" in caught.value.message
    assert "failed to import" in caught.value.message
    assert "missing API key module" in caught.value.message


def test_two_distributions_with_the_same_entry_point_name_is_a_configuration_error(fake_site: FakeSite) -> None:
    fake_site.install("crm-hub-fakecrm", entry_point="fakecrm", provider="fakecrm")
    fake_site.install("fakecrm-community", entry_point="fakecrm", provider="fakecrm_community")
    fake_site.activate()

    host = PluginHost(load_entry_points=True, load_default_plugins=False, allowlist=["fakecrm"])

    with pytest.raises(ConfigurationError) as caught:
        host.providers()
    assert "crm-hub-fakecrm" in caught.value.message
    assert "fakecrm-community" in caught.value.message


def test_allowlist_matches_distribution_names_as_pip_does(fake_site: FakeSite) -> None:
    fake_site.install("Crm_Hub_FakeCRM", entry_point="fakecrm", provider="fakecrm")
    fake_site.activate()

    host = PluginHost(load_entry_points=True, load_default_plugins=False, allowlist=["crm-hub-fakecrm"])

    assert [plugin.name for plugin in host.plugins()] == ["fakecrm"]


# -- The hook contract itself ---------------------------------------------------------------------


def _hookspecs() -> dict[str, object]:
    return {
        name: function
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, f"{hookspecs.hookspec.project_name}_spec")
    }


def test_there_is_at_least_one_hook() -> None:
    assert "register_providers" in _hookspecs()


@pytest.mark.parametrize("hook", sorted(_hookspecs()))
def test_every_hook_is_documented(hook: str) -> None:
    docstring = inspect.getdoc(_hookspecs()[hook]) or ""

    assert len(docstring) > 40, f"hook {hook} needs a docstring saying what to do and how it is called"


@pytest.mark.parametrize("hook", sorted(_hookspecs()))
def test_every_hook_has_tests(hook: str) -> None:
    tests = [name for name in globals() if name.startswith(f"test_hook_{hook}")]

    assert tests, f"add a test named test_hook_{hook}_... to {__name__}"


# -- the configuration the host hands its plugins -------------------------------------------------


class ConfiguredPlugin:
    """Registers a provider named after the ``CONFIGURED_NAME`` setting it is handed, and keeps what it saw."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    @hookimpl
    def register_providers(self, register: Callable[[CrmProvider], None], config: Mapping[str, str]) -> None:
        self.seen = dict(config)
        register(provider_named(config["CONFIGURED_NAME"]))


def test_plugins_are_configured_from_the_hosts_configuration_and_the_process_environment_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONFIGURED_NAME", raising=False)
    host = PluginHost(load_entry_points=False, load_default_plugins=False, config={"CONFIGURED_NAME": "first"})
    plugin = ConfiguredPlugin()
    host.register(plugin, name="configured")

    host.add_config({"CONFIGURED_NAME": "sandboxed", "EXTRA": "1"})  # what a sandbox does before providers exist

    assert host.providers().names() == ["sandboxed"]
    assert plugin.seen == {"CONFIGURED_NAME": "sandboxed", "EXTRA": "1"}
    assert "CONFIGURED_NAME" not in os.environ
    with pytest.raises(TypeError):
        host.config["CONFIGURED_NAME"] = "changed"  # type: ignore[index]


def test_configuration_added_after_providers_exist_is_refused_rather_than_silently_ignored() -> None:
    host = PluginHost(load_entry_points=False, load_default_plugins=False, config={"CONFIGURED_NAME": "first"})
    host.register(ConfiguredPlugin(), name="configured")
    host.providers()

    with pytest.raises(ConfigurationError, match="before providers are made"):
        host.add_config({"CONFIGURED_NAME": "late"})


def test_the_first_party_plugins_read_their_settings_from_the_hosts_configuration() -> None:
    config = {
        "HUBSPOT_CLIENT_ID": "hub-client",
        "HUBSPOT_CLIENT_SECRET": "hub-secret",
        "HUBSPOT_REDIRECT_URL": "https://crm-hub.example.com/oauth/hubspot/callback",
        "SALESFORCE_CLIENT_ID": "sf-client",
    }
    host = PluginHost(allowlist=["crm-hub-hubspot", "crm-hub-salesforce"], load_default_plugins=False, config=config)

    registry = host.providers()

    assert registry.get("hubspot").configuration_problem() is None
    assert registry.get("hubspot").settings.client_id == "hub-client"  # type: ignore[attr-defined]
    problem = registry.get("salesforce").configuration_problem() or ""
    assert "SALESFORCE_CLIENT_SECRET" in problem
    assert "SALESFORCE_CLIENT_ID" not in problem
