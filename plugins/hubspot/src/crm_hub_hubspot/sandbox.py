"""``crm-hub up --sandbox``: the fake HubSpot, served locally, with the settings that point HubSpotProvider at it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import ClassVar

from crm_hub.sandbox import Sandbox

__all__ = ["HubSpotSandbox"]


class HubSpotSandbox(Sandbox):
    name: ClassVar[str] = "hubspot"

    @asynccontextmanager
    async def serve(self, *, host: str, redirect_url: str) -> AsyncIterator[Mapping[str, str]]:
        # Imported here: the fake needs the plugin's "fake" extra (starlette, uvicorn), sandbox mode only.
        from crm_hub_hubspot.fake import FakeHubSpot, serving

        fake = FakeHubSpot(
            client_id="sandbox-client-id", client_secret=secrets.token_urlsafe(24), redirect_uri=redirect_url
        )
        async with serving(fake, host=host) as base_url:
            yield {
                "HUBSPOT_CLIENT_ID": fake.client_id,
                "HUBSPOT_CLIENT_SECRET": fake.client_secret,
                "HUBSPOT_REDIRECT_URL": redirect_url,
                "HUBSPOT_API_BASE_URL": base_url,
                "HUBSPOT_AUTHORIZE_URL": f"{base_url}/oauth/authorize",
            }
