"""A fake HubSpot for tests: a Starlette app reproducing HubSpot's OAuth and CRM contacts API.

    fake = FakeHubSpot(client_id=..., client_secret=..., redirect_uri=...)
    transport = httpx.ASGITransport(fake.app)          # in-process
    async with serving(fake) as base_url: ...          # on 127.0.0.1, a free port (uvicorn)
    python -m crm_hub_hubspot.fake --port 8765          # as a process

Needs the ``fake`` extra: ``pip install 'crm-hub-hubspot[fake]'``.
"""

from __future__ import annotations

from crm_hub_hubspot.fake.app import DEFAULT_SCOPES, Call, FakeContact, FakeHubSpot
from crm_hub_hubspot.fake.properties import CONTACT_PROPERTIES, PropertyError, contact_property
from crm_hub_hubspot.fake.server import serving

__all__ = [
    "CONTACT_PROPERTIES",
    "DEFAULT_SCOPES",
    "Call",
    "FakeContact",
    "FakeHubSpot",
    "PropertyError",
    "contact_property",
    "serving",
]
