"""Notifications: delivered in the background, never failing or delaying the sync; no secrets in them."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.default_plugins.slack import SlackNotifier
from crm_hub.notifications import Notification, NotificationDispatcher
from crm_hub.plugins import PluginHost
from crm_hub.service.application import Application
from crm_hub.service.config import Settings

FAILED_SYNC = Notification(
    kind="sync_failed",
    team_id="acme",
    provider="hubspot",
    lead_id="abc123",
    message="HubSpot refused the email address.",
    reason="FIELD_VALUE_INVALID",
    request_id="req-9",
)


def slack_webhook(received: list[dict[str, str]], *, delay: float = 0.0, status: int = 200) -> httpx.MockTransport:
    async def handle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay)
        received.append(json.loads(request.content))
        return httpx.Response(status, text="ok")

    return httpx.MockTransport(handle)


async def test_slack_posts_a_failed_sync_with_team_lead_and_reason() -> None:
    received: list[dict[str, str]] = []
    notifier = SlackNotifier("https://hooks.slack.invalid/services/T/B/SECRET", transport=slack_webhook(received))
    dispatcher = NotificationDispatcher([notifier])
    dispatcher.publish(FAILED_SYNC)
    await dispatcher.drain()
    assert len(received) == 1
    text = received[0]["text"]
    assert "Lead sync failed" in text
    assert "hubspot" in text
    assert "`acme`" in text
    assert "`abc123`" in text
    assert "FIELD_VALUE_INVALID" in text
    assert "SECRET" not in text


async def test_publishing_returns_at_once_even_when_the_webhook_is_slow() -> None:
    received: list[dict[str, str]] = []
    notifier = SlackNotifier("https://hooks.slack.invalid/x", transport=slack_webhook(received, delay=0.5))
    dispatcher = NotificationDispatcher([notifier], timeout=0.1)
    started = time.perf_counter()
    dispatcher.publish(FAILED_SYNC)
    assert time.perf_counter() - started < 0.05
    await dispatcher.drain()  # the slow delivery is cut off by the timeout, and dropped
    assert received == []


async def test_a_failing_webhook_is_logged_without_the_webhook_url(caplog: pytest.LogCaptureFixture) -> None:
    notifier = SlackNotifier("https://hooks.slack.invalid/SECRET-PATH", transport=slack_webhook([], status=500))
    dispatcher = NotificationDispatcher([notifier])
    dispatcher.publish(FAILED_SYNC)
    await dispatcher.drain()
    assert "notification not delivered" in caplog.text
    assert "SECRET-PATH" not in caplog.text


async def test_slack_is_not_told_of_successful_syncs() -> None:
    received: list[dict[str, str]] = []
    dispatcher = NotificationDispatcher(
        [SlackNotifier("https://hooks.slack.invalid/x", transport=slack_webhook(received))]
    )
    dispatcher.publish(Notification(kind="sync_succeeded", team_id="acme", provider="hubspot", message="ok"))
    await dispatcher.drain()
    assert received == []


def test_slack_without_a_webhook_url_is_not_configured() -> None:
    assert SlackNotifier(None).configured is False


async def test_status_lists_slack_as_connected_when_its_webhook_is_set(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, team_id: str
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.invalid/services/T/B/X")
    application = Application.from_settings(settings, plugins=PluginHost(load_entry_points=False))
    try:
        caller = Caller(principal=Principal(subject="u", team_id=team_id, role=Role.MEMBER), request_id="r")
        report = await application.status.report(caller)
    finally:
        await application.aclose()
    assert report["slack"].connected is True
    assert report["slack"].error is None


async def test_status_leaves_slack_out_without_a_webhook(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, team_id: str
) -> None:
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    application = Application.from_settings(settings, plugins=PluginHost(load_entry_points=False))
    try:
        caller = Caller(principal=Principal(subject="u", team_id=team_id, role=Role.MEMBER), request_id="r")
        assert "slack" not in await application.status.report(caller)
    finally:
        await application.aclose()
