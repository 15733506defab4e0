"""Throwaway providers and plugins for tests of the plugin host: they register, they never talk to a CRM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from crm_hub.hookspecs import hookimpl
from crm_hub.providers import ContactInput, ContactUpdate, CrmField, CrmProvider, TokenSet, WriteResult


class StubCrm(CrmProvider):
    """A provider that only has a name: every CRM operation is out of scope for plugin-host tests."""

    name: ClassVar[str] = "stubcrm"
    label: ClassVar[str] = "StubCRM"

    def authorization_url(self, *, state: str, code_challenge: str | None) -> str:
        return f"https://{self.name}.invalid/authorize?state={state}"

    async def exchange_code(self, *, code: str, code_verifier: str | None) -> TokenSet:
        raise NotImplementedError

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        raise NotImplementedError

    async def list_fields(self, tokens: TokenSet) -> list[CrmField]:
        raise NotImplementedError

    async def find_contacts_by_email(self, tokens: TokenSet, emails: Sequence[str]) -> dict[str, list[str]]:
        raise NotImplementedError

    async def create_contacts(self, tokens: TokenSet, contacts: Sequence[ContactInput]) -> list[WriteResult]:
        raise NotImplementedError

    async def update_contacts(self, tokens: TokenSet, updates: Sequence[ContactUpdate]) -> list[WriteResult]:
        raise NotImplementedError


def provider_named(name: str, label: str = "") -> CrmProvider:
    """A StubCrm instance whose class is called ``name`` (any string, valid or not)."""
    provider_class = type(f"StubCrm_{abs(hash(name))}", (StubCrm,), {"name": name, "label": label or name.title()})
    return provider_class()  # type: ignore[no-any-return]


class RegisteringPlugin:
    """A plugin object whose ``register_providers`` hands over ``registered``, whatever they are."""

    def __init__(self, *registered: object) -> None:
        self.registered = registered

    @hookimpl
    def register_providers(self, register: Callable[[object], None]) -> None:
        for provider in self.registered:
            register(provider)


class RegisteringNotifiers:
    """A plugin object whose ``register_notifiers`` hands over ``registered``, whatever they are."""

    def __init__(self, *registered: object) -> None:
        self.registered = registered

    @hookimpl
    def register_notifiers(self, register: Callable[[object], None]) -> None:
        for notifier in self.registered:
            register(notifier)
