"""The built-in Slack notifier: posts failed syncs, expired credentials and disconnections to
``SLACK_WEBHOOK_URL`` (an incoming webhook), when it is set.

Messages carry the team, provider, lead and reason — never a token or secret, and not the webhook URL
itself (which is a credential) in any log line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import ClassVar

import httpx

from crm_hub.hookspecs import hookimpl
from crm_hub.notifications import Notification, NotificationKind, Notifier

__all__ = ["SlackNotifier"]

_TITLES: dict[str, str] = {
    "sync_failed": ":x: Lead sync failed",
    "sync_job_finished": ":inbox_tray: Sync job finished",
    "credentials_expired": ":warning: CRM credentials expired — reconnect needed",
    "disconnected": ":electric_plug: CRM disconnected",
}


class SlackNotifier(Notifier):
    name: ClassVar[str] = "slack"
    kinds: ClassVar[frozenset[NotificationKind]] = frozenset(
        {"sync_failed", "sync_job_finished", "credentials_expired", "disconnected"}
    )

    def __init__(
        self, webhook_url: str | None, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 3.0
    ) -> None:
        self._webhook_url = webhook_url
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout)

    def __repr__(self) -> str:
        return f"SlackNotifier(configured={self.configured})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SlackNotifier:
        env = os.environ if environ is None else environ
        return cls(env.get("SLACK_WEBHOOK_URL", "").strip() or None)

    @property
    def configured(self) -> bool:
        return self._webhook_url is not None

    async def notify(self, notification: Notification) -> None:
        if self._webhook_url is None:
            return
        response = await self._client.post(self._webhook_url, json={"text": render(notification)})
        response.raise_for_status()

    async def aclose(self) -> None:
        await self._client.aclose()


def render(notification: Notification) -> str:
    """The Slack message text (mrkdwn)."""
    lines = [f"*{_TITLES.get(notification.kind, notification.kind)}* — {notification.provider}"]
    lines.append(notification.message)
    details = [
        f"team `{notification.team_id}`",
        *([f"lead `{notification.lead_id}`"] if notification.lead_id else []),
        *([f"job `{notification.job_id}`"] if notification.job_id else []),
        *([f"reason `{notification.reason}`"] if notification.reason else []),
        *([f"request `{notification.request_id}`"] if notification.request_id else []),
    ]
    lines.append(" · ".join(details))
    return "\n".join(lines)


@hookimpl
def register_notifiers(register: Callable[[Notifier], None], config: Mapping[str, str]) -> None:
    register(SlackNotifier.from_env(config))
