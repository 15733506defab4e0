"""What ``crm-hub status --team T`` prints: a team's integrations as ``GetStatus`` reports them, as a table per
provider for a terminal, or as the REST answer of ``GET /integrations/status`` for scripts (``--json``)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf import json_format

from crm_hub.core.budget import BudgetView
from crm_hub.core.status import IntegrationState
from crm_hub.rpc import convert
from crm_hub.v1 import status_pb2

__all__ = ["lead_success_rate", "render_json", "render_text"]

#: Width of the label column, and where long values wrap.
LABEL_WIDTH = 14
LINE_WIDTH = 100


def lead_success_rate(state: IntegrationState) -> float | None:
    """Of the team's leads whose last sync with the provider ended (synced or failed), the share synced; None
    when none has. Pending leads (queued, or a write under way) are not counted until they end."""
    tried = state.leads_synced + state.leads_failed
    return state.leads_synced / tried if tried else None


def render_json(team: str, report: Mapping[str, IntegrationState]) -> str:
    """The REST answer (same field names and values) with the team it is about."""
    response = status_pb2.GetStatusResponse(
        success=True, integrations={name: convert.integration_status(state) for name, state in report.items()}
    )
    # As the gateway transcodes it: camelCase names, zeros and empty lists printed, unset messages left out.
    body = json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
    return json.dumps({"team": team, **body}, indent=2)


def render_text(
    team: str, report: Mapping[str, IntegrationState], *, problems: Mapping[str, str | None], now: datetime
) -> str:
    """``problems`` has every installed provider: what an operator must set before it can connect, or None;
    the report's other entries are notifiers."""
    providers = [name for name in report if name in problems]
    if not providers:
        lines = ["No CRM provider is installed: see `crm-hub plugins` and CRM_HUB_PLUGINS."]
    elif not any(_in_use(report[name]) for name in providers):
        lines = _no_integration(team, {name: report[name] for name in providers}, problems)
    else:
        lines = [f"Integrations of team {team!r} at {now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"]
        for name in providers:
            lines += ["", *_provider_table(name, report[name], problems[name], now)]
    if notifiers := sorted(name for name in report if name not in problems):
        lines += ["", f"Notifications go to: {', '.join(notifiers)}"]
    return "\n".join(lines)


def _in_use(state: IntegrationState) -> bool:
    """Connected now, or was: it has a connection row or sync history."""
    ended = state.leads_synced + state.leads_pending + state.leads_failed
    return state.state not in ("", "DISCONNECTED") or bool(state.syncs_total or ended or state.last_sync)


def _no_integration(team: str, states: Mapping[str, IntegrationState], problems: Mapping[str, str | None]) -> list[str]:
    leads = next(iter(states.values())).leads_unsynced  # nothing synced: every lead of the team is unsynced
    lines = [f"Team {team!r} has no CRM integration: none is connected, and none has synced a lead."]
    if leads:
        lines.append(f"It has {leads} lead(s), none synced yet.")
    else:
        lines.append("crm_hub holds no lead of this team either: check the id (the team_id claim of its tokens).")
    lines += ["", "Installed providers:"]
    lines += [_row(name, problems[name] or "ready to connect") for name in states]
    if not all(problems[name] for name in states):
        lines += ["", "A team admin connects one with GET /integrations/{kind}/start."]
    return lines


def _provider_table(name: str, state: IntegrationState, problem: str | None, now: datetime) -> list[str]:
    rows = [("connection", _connection(state, problem))]
    if problem:
        rows.append(("setup", problem))
    rows.append(("last sync", _moment(state.last_sync, now) if state.last_sync else "never"))
    rows.append(
        (
            "leads",
            f"{state.leads_synced} synced, {state.leads_pending} pending, {state.leads_failed} failed, "
            f"{state.leads_unsynced} never synced",
        )
    )
    rate = lead_success_rate(state)
    tried = state.leads_synced + state.leads_failed
    rows.append(
        ("success rate", "-" if rate is None else f"{rate:.1%} ({state.leads_synced} of the {tried} leads tried)")
    )
    runs = state.syncs_total
    rows.append(("syncs run", f"{runs}, {state.syncs_succeeded} succeeded ({state.success_rate:.1%})" if runs else "0"))
    budgets = [_budget(budget, now) for budget in state.budgets] or ["none kept by crm_hub for this CRM"]
    rows += [("rate budget" if n == 0 else "", text) for n, text in enumerate(budgets)]
    title = f"{name}  (plugin {state.version})" if state.version else name
    return [title, *(_row(label, value, indent=2) for label, value in rows)]


def _connection(state: IntegrationState, problem: str | None) -> str:
    text = state.state or "-"
    if state.error and state.error != problem:  # the report gives a configuration problem as the error too
        text += f": {state.error}"
    if state.error_reason:
        text += f" [{state.error_reason}]"
    if state.reconnect_required:
        text += "; a team admin must reconnect it"
    return text


def _budget(budget: BudgetView, now: datetime) -> str:
    text = f"{budget.name}: {budget.remaining} of {budget.limit} requests left per {_window(budget.window_seconds)}"
    if budget.available_at is not None:
        text += f"; next slot free {_moment(budget.available_at, now)}"
    return text


def _row(label: str, value: str, *, indent: int = 2) -> str:
    return textwrap.fill(
        value,
        width=LINE_WIDTH,
        initial_indent=" " * indent + label.ljust(LABEL_WIDTH - 1) + " ",
        subsequent_indent=" " * (indent + LABEL_WIDTH),
        break_long_words=False,
        break_on_hyphens=False,
    )


def _moment(at: datetime, now: datetime) -> str:
    seconds = round((at - now).total_seconds())
    if seconds > 0:
        relative = f"in {_duration(seconds)}"
    else:
        relative = f"{_duration(-seconds)} ago" if seconds < 0 else "just now"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({relative})"


def _duration(seconds: int) -> str:
    """Roughly: the largest unit that fits, rounded down."""
    for unit, size, least in (("days", 86400, 2 * 86400), ("h", 3600, 3600), ("min", 60, 60)):
        if seconds >= least:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _window(seconds: int) -> str:
    """Exactly: a limit's window."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
