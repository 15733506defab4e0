"""crm-hub-hubspot: the HubSpot provider plugin for crm_hub, and a fake HubSpot (``crm_hub_hubspot.fake``).

The provider loads through the ``crm_hub`` entry point group (``crm_hub_hubspot.plugin``); the fake needs
the ``fake`` extra (Starlette and uvicorn) and is imported only on demand.
"""

from __future__ import annotations

from crm_hub_hubspot.errors import classify
from crm_hub_hubspot.provider import SCOPES, HubSpotProvider, to_hubspot_value
from crm_hub_hubspot.settings import HubSpotSettings

__all__ = ["SCOPES", "HubSpotProvider", "HubSpotSettings", "classify", "to_hubspot_value"]
__version__ = "0.1.0"
