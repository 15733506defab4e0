"""``crm-hub up --sandbox``: the fake Salesforce, served locally, with the settings that point SalesforceProvider
at it (the fake serves both the login host and the org's instance)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import ClassVar

from crm_hub.sandbox import Sandbox

__all__ = ["SalesforceSandbox"]


class SalesforceSandbox(Sandbox):
    name: ClassVar[str] = "salesforce"

    @asynccontextmanager
    async def serve(self, *, host: str, redirect_url: str) -> AsyncIterator[Mapping[str, str]]:
        # Imported here: the fake needs the plugin's "fake" extra (starlette, uvicorn), sandbox mode only.
        from crm_hub_salesforce.fake import FakeSalesforce, serving

        fake = FakeSalesforce(
            client_id="sandbox-client-id", client_secret=secrets.token_urlsafe(24), redirect_uri=redirect_url
        )
        async with serving(fake, host=host) as base_url:
            yield {
                "SALESFORCE_CLIENT_ID": fake.client_id,
                "SALESFORCE_CLIENT_SECRET": fake.client_secret,
                "SALESFORCE_REDIRECT_URL": redirect_url,
                "SALESFORCE_LOGIN_URL": base_url,
            }
