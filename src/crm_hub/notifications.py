"""Telling the outside world what happened: the notifier contract and the background dispatcher.

Notifiers are registered by plugins (``register_notifiers`` hook); the built-in Slack notifier is one of
them. Notifications carry ids, reasons and messages — never a token or secret — and are delivered in the
background with a timeout each, so a slow or failing webhook never fails or delays the sync that caused it.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = ["Notification", "NotificationDispatcher", "NotificationKind", "Notifier"]

logger = logging.getLogger(__name__)

NotificationKind = Literal[
    "sync_succeeded", "sync_failed", "sync_job_finished", "credentials_expired", "connected", "disconnected"
]


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    team_id: str
    provider: str
    message: str
    lead_id: str | None = None
    contact_id: str | None = None
    reason: str | None = None
    request_id: str = ""
    #: The sync job it is about (``sync_job_finished``: one summary per job, never a message per lead).
    job_id: str | None = None


class Notifier(ABC):
    """Base class of notifiers. ``configured`` says whether it will deliver anything (shown in status)."""

    name: ClassVar[str]
    #: Kinds this notifier wants; others are not sent to it.
    kinds: ClassVar[frozenset[NotificationKind]] = frozenset(
        {"sync_succeeded", "sync_failed", "sync_job_finished", "credentials_expired", "connected", "disconnected"}
    )

    @property
    def configured(self) -> bool:
        return True

    @abstractmethod
    async def notify(self, notification: Notification) -> None:
        """Deliver one notification. Exceptions are logged and dropped by the dispatcher."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients; called once when the service stops."""


class NotificationDispatcher:
    """Fans notifications out to notifiers as background tasks, each bounded by ``timeout`` seconds."""

    def __init__(self, notifiers: Sequence[Notifier], *, timeout: float = 5.0) -> None:
        self._notifiers = [notifier for notifier in notifiers if notifier.configured]
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def publish(self, notification: Notification) -> None:
        """Schedule delivery and return at once."""
        for notifier in self._notifiers:
            if notification.kind in notifier.kinds:
                task = asyncio.get_running_loop().create_task(self._deliver(notifier, notification))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, notifier: Notifier, notification: Notification) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await notifier.notify(notification)
        except Exception as error:
            logger.warning(
                "notification not delivered",
                extra={"notifier": notifier.name, "kind": notification.kind, "error": type(error).__name__},
            )

    async def drain(self) -> None:
        """Wait for deliveries in flight (tests, and shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
