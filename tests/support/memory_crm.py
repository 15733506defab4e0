"""A throwaway in-memory provider for tests of the core and the RPC layer (not a CRM fake)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from crm_hub.errors import AuthExpired, RefreshRejected, Rejected
from crm_hub.hookspecs import hookimpl
from crm_hub.providers import (
    ContactInput,
    ContactUpdate,
    CrmField,
    CrmProvider,
    ProviderCapabilities,
    TokenSet,
    WriteResult,
)


class MemoryCrm(CrmProvider):
    name: ClassVar[str] = "memorycrm"
    label: ClassVar[str] = "MemoryCRM"
    capabilities: ClassVar[ProviderCapabilities] = ProviderCapabilities(max_batch_size=10, pkce=True)

    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, object]] = {}
        self.codes: dict[str, str | None] = {}  # code -> expected PKCE verifier challenge
        self.calls: list[str] = []
        self.updates: list[ContactUpdate] = []
        self.reject_refresh = False
        self.expire_next_calls = 0  # answer this many contact/field calls with AuthExpired
        self._ids = itertools.count(1)

    def authorization_url(self, *, state: str, code_challenge: str | None) -> str:
        return f"https://crm.invalid/authorize?state={state}&code_challenge={code_challenge}"

    async def exchange_code(self, *, code: str, code_verifier: str | None) -> TokenSet:
        self.calls.append("exchange_code")
        if code != "good-code":
            raise Rejected("invalid authorization code", provider=self.name, reason="OAUTH_CODE_INVALID")
        return TokenSet(
            access_token=f"access-{next(self._ids)}",
            refresh_token="refresh-secret",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        self.calls.append("refresh")
        await asyncio.sleep(0.02)  # a real round trip: concurrent callers overlap with it
        if self.reject_refresh:
            raise RefreshRejected("refresh token is invalid, expired or revoked", provider=self.name, status=400)
        return TokenSet(access_token=f"access-{next(self._ids)}", expires_at=datetime.now(UTC) + timedelta(hours=1))

    async def list_fields(self, tokens: TokenSet) -> list[CrmField]:
        self.calls.append("list_fields")
        if self.expire_next_calls:
            self.expire_next_calls -= 1
            raise AuthExpired("The OAuth token used to make this call expired.", provider=self.name, status=401)
        return [
            CrmField(name="email", label="Email", type="email", required=True),
            CrmField(name="firstname", label="First name", type="string"),
            CrmField(name="score", label="Score", type="number", writable=False),
        ]

    async def find_contacts_by_email(self, tokens: TokenSet, emails: Sequence[str]) -> dict[str, list[str]]:
        self.calls.append("find")
        return {email: [cid for cid, props in self.contacts.items() if props.get("email") == email] for email in emails}

    async def create_contacts(self, tokens: TokenSet, contacts: Sequence[ContactInput]) -> list[WriteResult]:
        self.calls.append("create")
        results = []
        for contact in contacts:
            contact_id = str(next(self._ids))
            self.contacts[contact_id] = dict(contact.properties)
            results.append(WriteResult(contact_id=contact_id, created=True))
        return results

    async def update_contacts(self, tokens: TokenSet, updates: Sequence[ContactUpdate]) -> list[WriteResult]:
        self.calls.append("update")
        self.updates.extend(updates)
        for update in updates:
            self.contacts[update.contact_id].update(update.properties)
        return [WriteResult(contact_id=update.contact_id) for update in updates]


class MemoryCrmPlugin:
    """A plugin object registering one MemoryCrm, as an entry point module would."""

    def __init__(self, provider: CrmProvider | None = None) -> None:
        self.provider = provider or MemoryCrm()

    @hookimpl
    def register_providers(self, register: object) -> None:
        register(self.provider)  # type: ignore[operator]
