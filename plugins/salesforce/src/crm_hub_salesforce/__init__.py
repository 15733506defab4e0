"""crm-hub-salesforce: the Salesforce provider plugin for crm_hub, and a fake Salesforce (``crm_hub_salesforce.fake``).

The provider loads through the ``crm_hub`` entry point group (``crm_hub_salesforce.plugin``); the fake needs
the ``fake`` extra (Starlette and uvicorn) and is imported only on demand.
"""

from __future__ import annotations

from crm_hub_salesforce.errors import DailyApiLimitReached, classify, record_error
from crm_hub_salesforce.provider import SCOPES, TYPE_MAP, SalesforceProvider, to_salesforce_value
from crm_hub_salesforce.settings import DEFAULT_API_VERSION, DEFAULT_LOGIN_URL, SalesforceSettings

__all__ = [
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
__version__ = "0.1.0"
