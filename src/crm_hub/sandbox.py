"""Sandboxes: a provider plugin's bundled fake CRM, served locally so crm_hub can be tried without an account.

``crm-hub up --sandbox`` asks every installed plugin for its sandbox (``register_sandboxes`` hook), serves each
fake on a free loopback port, and points the matching provider at it through the environment variables the
sandbox returns — before any provider is built, so providers read them like any other settings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import ClassVar

__all__ = ["Sandbox"]


class Sandbox(ABC):
    """A fake of one CRM that a newcomer can walk the whole flow against."""

    #: The provider this sandbox stands in for (its ``CrmProvider.name``).
    name: ClassVar[str]

    @abstractmethod
    def serve(self, *, host: str, redirect_url: str) -> AbstractAsyncContextManager[Mapping[str, str]]:
        """Serve the fake on ``host`` (a free port) while the context is open; yield the environment variables
        that point the provider at it. After consent the fake redirects the browser to ``redirect_url``
        with ``code`` and ``state``."""
