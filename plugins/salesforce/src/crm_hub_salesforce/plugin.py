"""The ``crm_hub`` entry point of crm-hub-salesforce: registers one SalesforceProvider configured from the env."""

from __future__ import annotations

from collections.abc import Callable

from crm_hub.hookspecs import hookimpl
from crm_hub.providers import CrmProvider

from crm_hub_salesforce.provider import SalesforceProvider

__all__ = ["register_providers"]


@hookimpl
def register_providers(register: Callable[[CrmProvider], None]) -> None:
    """Register Salesforce. Missing ``SALESFORCE_*`` settings raise ConfigurationError, naming them."""
    register(SalesforceProvider.from_env())
