"""The ``crm_hub`` entry point of crm-hub-salesforce: registers one SalesforceProvider configured from the env."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from crm_hub.hookspecs import hookimpl
from crm_hub.providers import CrmProvider
from crm_hub.sandbox import Sandbox

from crm_hub_salesforce.provider import SalesforceProvider
from crm_hub_salesforce.sandbox import SalesforceSandbox

__all__ = ["register_providers", "register_sandboxes"]


@hookimpl
def register_providers(register: Callable[[CrmProvider], None], config: Mapping[str, str]) -> None:
    """Register Salesforce, configured from ``SALESFORCE_*``; missing ones are reported in status and on connect."""
    register(SalesforceProvider.from_env(config))


@hookimpl
def register_sandboxes(register: Callable[[Sandbox], None]) -> None:
    """The bundled fake, for ``crm-hub up --sandbox`` (needs the plugin's ``fake`` extra)."""
    register(SalesforceSandbox())
