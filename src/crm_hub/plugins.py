"""The plugin host: loads plugins from the ``crm_hub`` entry point group and collects their providers.

First-party providers (crm-hub-hubspot, crm-hub-salesforce) load through the same entry points as any
third-party package. ``CRM_HUB_PLUGINS`` (comma-separated distribution or entry point names) restricts
which are loaded; set to an empty string it loads none.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import pluggy

from crm_hub import __version__, hookspecs
from crm_hub.errors import ConfigurationError, NotFound
from crm_hub.notifications import Notifier
from crm_hub.providers import PROVIDER_NAME_PATTERN, CrmProvider
from crm_hub.sandbox import Sandbox

__all__ = ["ENTRY_POINT_GROUP", "LoadedPlugin", "PluginHost", "ProviderRegistry"]

ENTRY_POINT_GROUP = "crm_hub"
#: Built-in features, registered as ordinary plugins (the datasette pattern).
DEFAULT_PLUGINS = ("crm_hub.default_plugins.slack",)
T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPlugin:
    """A registered plugin, and the distribution it came from (empty for in-process registrations)."""

    name: str
    distribution: str
    version: str


class ProviderRegistry:
    """The providers registered by plugins, by name."""

    def __init__(self, providers: dict[str, CrmProvider], origins: dict[str, LoadedPlugin]) -> None:
        self._providers = providers
        self._origins = origins

    def __iter__(self) -> Iterator[CrmProvider]:
        return iter(self._providers[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._providers)

    def names(self) -> list[str]:
        return sorted(self._providers)

    def get(self, name: str) -> CrmProvider:
        """The provider called ``name``, or NotFound naming the ones that are available."""
        provider = self._providers.get(name)
        if provider is None:
            available = ", ".join(self.names()) or "none (no provider plugin is installed)"
            shown = name if PROVIDER_NAME_PATTERN.fullmatch(name) else repr(name[:40])
            raise NotFound(
                f"Unknown provider {shown}. Available providers: {available}.",
                reason="PROVIDER_NOT_FOUND",
                metadata={"provider": name[:40], "available": ",".join(self.names())},
            )
        return provider

    def origin(self, name: str) -> LoadedPlugin:
        return self._origins[name]


class PluginHost:
    """Owns the pluggy PluginManager. Plugins load lazily and once."""

    def __init__(
        self,
        *,
        load_entry_points: bool = True,
        load_default_plugins: bool = True,
        allowlist: Collection[str] | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        """``config`` is what plugins are configured from (``register_providers(register, config)``): by
        default the process environment as it is now, copied once — later changes to it are not seen."""
        self.manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self._config: dict[str, str] = dict(os.environ if config is None else config)
        self.manager.add_hookspecs(hookspecs)
        self._load_entry_points = load_entry_points
        self._allowlist = None if allowlist is None else frozenset(allowlist)
        self._loaded = False
        self._plugins: dict[str, LoadedPlugin] = {}
        self._registry: ProviderRegistry | None = None
        self._notifiers: list[Notifier] | None = None
        if load_default_plugins:
            for name in DEFAULT_PLUGINS:
                self.register(importlib.import_module(name), name=name, distribution="crm-hub", version=__version__)

    @property
    def config(self) -> Mapping[str, str]:
        """The configuration plugins are handed, read-only."""
        return MappingProxyType(self._config)

    def add_config(self, values: Mapping[str, str]) -> None:
        """Add to the plugins' configuration before any provider is made (a sandbox points its provider at
        its fake this way). Too late once providers exist: they were configured already."""
        if self._registry is not None or self._notifiers is not None:
            raise ConfigurationError("Plugin configuration can only be added before providers are made.")
        self._config.update(values)

    def register(self, plugin: object, *, name: str, distribution: str = "", version: str = "") -> None:
        """Register an in-process plugin (tests use this for throwaway providers)."""
        if name in self._plugins:
            other = self._plugins[name].distribution or "an in-process plugin"
            raise ConfigurationError(
                f"Two plugins are named {name!r}: from {other} and from {distribution or 'an in-process plugin'}."
            )
        try:
            self.manager.register(plugin, name=name)
        except pluggy.PluginValidationError as error:
            raise ConfigurationError(f"Plugin {name!r} is not a valid crm_hub plugin: {error}") from None
        self._plugins[name] = LoadedPlugin(name=name, distribution=distribution, version=version)
        self._registry = None
        self._notifiers = None

    def unregister(self, name: str) -> None:
        self.manager.unregister(name=name)
        self._plugins.pop(name, None)
        self._registry = None
        self._notifiers = None

    def plugins(self) -> list[LoadedPlugin]:
        self._ensure_loaded()
        return sorted(self._plugins.values(), key=lambda plugin: plugin.name)

    def providers(self) -> ProviderRegistry:
        self._ensure_loaded()
        if self._registry is None:
            self._registry = ProviderRegistry(
                *self._collect("register_providers", CrmProvider, "provider")  # type: ignore[type-abstract]
            )
        return self._registry

    def notifiers(self) -> list[Notifier]:
        """The registered notifiers, configured or not, by name."""
        self._ensure_loaded()
        if self._notifiers is None:
            notifiers, _ = self._collect("register_notifiers", Notifier, "notifier")  # type: ignore[type-abstract]
            self._notifiers = [notifiers[name] for name in sorted(notifiers)]
        return self._notifiers

    def sandboxes(self) -> list[Sandbox]:
        """The registered sandboxes, by name (asked for only by ``crm-hub up --sandbox``)."""
        self._ensure_loaded()
        sandboxes, _ = self._collect("register_sandboxes", Sandbox, "sandbox")  # type: ignore[type-abstract]
        return [sandboxes[name] for name in sorted(sandboxes)]

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        loaded: list[str] = []
        try:
            if self._load_entry_points:
                self._load_entry_point_plugins(loaded)
            # A misspelled hook in a plugin fails here, loudly, instead of never being called.
            self.manager.check_pending()
        except pluggy.PluginValidationError as error:
            self._forget(loaded)
            raise ConfigurationError(f"A crm_hub plugin implements an unknown hook: {error}") from None
        except Exception:
            self._forget(loaded)  # a failed load fails again next time; it never leaves a half-loaded host
            raise
        self._loaded = True

    def _load_entry_point_plugins(self, loaded: list[str]) -> None:
        wanted = None if self._allowlist is None else {_normalize(name) for name in self._allowlist}
        matched: set[str] = set()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist else ""
            names = {_normalize(entry_point.name), _normalize(distribution)}
            if wanted is not None and not names & wanted:
                logger.info("plugin not in CRM_HUB_PLUGINS, not loaded", extra={"plugin": entry_point.name})
                continue
            matched |= names
            module = _load(entry_point)
            version = entry_point.dist.version if entry_point.dist else ""
            self.register(module, name=entry_point.name, distribution=distribution, version=version)
            loaded.append(entry_point.name)
        for missing in sorted((wanted or set()) - matched):
            logger.warning("CRM_HUB_PLUGINS names a plugin that is not installed", extra={"plugin": missing})

    def _forget(self, names: list[str]) -> None:
        for name in names:
            self.unregister(name)

    def _collect(self, hook_name: str, base: type[T], what: str) -> tuple[dict[str, T], dict[str, LoadedPlugin]]:
        """Call every implementation of a ``register_*`` hook, checking each registered object once, here."""
        items: dict[str, T] = {}
        origins: dict[str, LoadedPlugin] = {}
        for implementation in getattr(self.manager.hook, hook_name).get_hookimpls():
            plugin = self._plugins.get(implementation.plugin_name) or LoadedPlugin(implementation.plugin_name, "", "")

            def register(item: T, plugin: LoadedPlugin = plugin) -> None:
                if not isinstance(item, base):
                    raise ConfigurationError(
                        f"Plugin {plugin.name!r} registered {item!r}, which is not a {base.__name__}."
                    )
                name = getattr(item, "name", "")
                if not isinstance(name, str) or not PROVIDER_NAME_PATTERN.fullmatch(name):
                    raise ConfigurationError(
                        f"Plugin {plugin.name!r} registered a {what} named {name!r}; names must match "
                        f"{PROVIDER_NAME_PATTERN.pattern}."
                    )
                if name in items:
                    raise ConfigurationError(
                        f"{what.capitalize()} {name!r} is registered twice: by plugin {origins[name].name!r} "
                        f"and by plugin {plugin.name!r}."
                    )
                items[name] = item
                origins[name] = plugin

            arguments = {"register": register, "config": self.config}
            implementation.function(**{name: arguments[name] for name in implementation.argnames})
        return items, origins


def _normalize(name: str) -> str:
    """Distribution names compare as PEP 503 says: case, '-', '_' and '.' don't matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _load(entry_point: importlib.metadata.EntryPoint) -> object:
    try:
        plugin: object = entry_point.load()
        return plugin
    except Exception as error:
        raise ConfigurationError(
            f"Plugin {entry_point.name!r} ({entry_point.value}) failed to import: {error}"
        ) from error
