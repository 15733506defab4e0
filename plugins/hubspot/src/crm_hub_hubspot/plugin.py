"""The ``crm_hub`` entry point of crm-hub-hubspot: registers one HubSpotProvider configured from the env."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from crm_hub.hookspecs import hookimpl
from crm_hub.providers import CrmProvider
from crm_hub.sandbox import Sandbox

from crm_hub_hubspot.provider import HubSpotProvider
from crm_hub_hubspot.sandbox import HubSpotSandbox

__all__ = ["register_providers", "register_sandboxes"]


@hookimpl
def register_providers(register: Callable[[CrmProvider], None], config: Mapping[str, str]) -> None:
    """Register HubSpot, configured from ``HUBSPOT_*``; if some are missing it says so in status and on connect."""
    register(HubSpotProvider.from_env(config))


@hookimpl
def register_sandboxes(register: Callable[[Sandbox], None]) -> None:
    """The bundled fake, for ``crm-hub up --sandbox`` (needs the plugin's ``fake`` extra)."""
    register(HubSpotSandbox())
