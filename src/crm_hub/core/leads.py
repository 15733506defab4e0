"""Lead intake and the lead's audit timeline. Every read and write is scoped to the caller's team."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.core.caller import Caller
from crm_hub.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound, Unavailable
from crm_hub.observability.tracing import traced
from crm_hub.storage import Database, Lead, LeadRepository, TeamRepository, TimelineEvent, TimelineRepository
from crm_hub.storage.models import LeadSyncState
from crm_hub.storage.sync import SyncStateRepository

__all__ = [
    "LEAD_FIELD_NAME",
    "RECORD_ID",
    "LeadRecord",
    "LeadService",
    "LeadSyncView",
    "TimelineEntry",
    "TimelinePage",
    "check_lead_id",
]

MAX_FIELDS = 100
MAX_VALUE_LENGTH = 10_000
MAX_EXTERNAL_ID_LENGTH = 128
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Longest lead id looked up at all: longer is the caller's mistake (INVALID_ARGUMENT), not an unknown lead.
MAX_LEAD_ID_LENGTH = 128
#: A lead field name (also a mapping's key): what the lead intake and the mapping accept.
LEAD_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
#: The ids crm_hub gives leads and sync jobs: 32 hexadecimal characters (a uuid4).
RECORD_ID = re.compile(r"^[0-9a-f]{32}$")
#: C0 control characters but tab, newline and carriage return: no lead value legitimately holds them, and NUL
#: is cut short or refused by the CRMs and by PostgreSQL.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class LeadRecord:
    """A stored lead, as the core hands it out (no database row escapes the core)."""

    id: str
    fields: dict[str, str]
    external_id: str | None
    created_at: datetime
    updated_at: datetime | None = None

    @classmethod
    def of(cls, row: Lead) -> LeadRecord:
        return cls(
            id=row.id,
            fields=dict(row.fields),
            external_id=row.external_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True)
class LeadSyncView:
    """Where a lead stands with one provider."""

    provider: str
    status: str
    contact_id: str | None
    last_action: str | None
    last_synced_at: datetime | None
    last_attempt_at: datetime | None
    attempts: int
    failures: int
    error_reason: str | None
    error: str | None
    job_id: str | None

    @classmethod
    def of(cls, row: LeadSyncState) -> LeadSyncView:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TimelineEntry:
    """One audited operation on a lead."""

    id: str
    lead_id: str | None
    provider: str
    action: str
    contact_id: str | None
    dry_run: bool
    error_reason: str | None
    message: str
    actor: str
    request_id: str
    duration_ms: int
    created_at: datetime
    job_id: str | None

    @classmethod
    def of(cls, row: TimelineEvent) -> TimelineEntry:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TimelinePage:
    events: list[TimelineEntry]
    next_page_token: str


class LeadsChangedHook(Protocol):
    """Told of leads stored (``new``) or changed, in the transaction that writes them: automatic sync queues
    them there, so a lead is never stored without being queued."""

    async def __call__(self, session: AsyncSession, team_id: str, lead_ids: Sequence[str], *, new: bool) -> None: ...


class LeadService:
    def __init__(self, database: Database, *, on_leads_changed: LeadsChangedHook | None = None) -> None:
        self._database = database
        self._on_leads_changed = on_leads_changed
        # Teams whose row is known to exist: intake then costs one INSERT, not two (teams are never deleted
        # through the API, so the set only grows, by one entry per team).
        self._known_teams: set[str] = set()

    @traced("create lead")
    async def create(self, caller: Caller, fields: Mapping[str, str], external_id: str = "") -> tuple[LeadRecord, bool]:
        """Store a lead; with an external_id already used by the team, return that lead (created=False).

        The same external_id with different fields is refused with ALREADY_EXISTS rather than silently
        ignoring (or overwriting) the new values.
        """
        _validate_lead(fields, external_id)
        async with self._database.session(writes=True) as session:
            if caller.team_id not in self._known_teams:
                await TeamRepository(session).ensure(caller.team_id)
            lead, created = await LeadRepository(session).create(caller.team_id, dict(fields), external_id or None)
            if created and self._on_leads_changed is not None:
                await self._on_leads_changed(session, caller.team_id, [lead.id], new=True)
        self._known_teams.add(caller.team_id)
        if not created and dict(lead.fields) != dict(fields):
            raise AlreadyExists(
                f"A lead with externalId {external_id!r} already exists with different fields.",
                reason="LEAD_EXTERNAL_ID_CONFLICT",
                metadata={"lead_id": lead.id},
            )
        return LeadRecord.of(lead), created

    @traced("update lead")
    async def update(self, caller: Caller, lead_id: str, changes: Mapping[str, str]) -> tuple[LeadRecord, bool]:
        """Merge ``changes`` into the lead's fields (a value of "" removes the field); the lead, and whether it
        changed. The result must be a valid lead, as at intake; nothing is written otherwise."""
        check_lead_id(lead_id)
        _validate_changes(changes)
        async with self._database.session(writes=True) as session:
            leads = LeadRepository(session)
            row = await leads.get(caller.team_id, lead_id, for_update=True)
            fields = {**row.fields, **{name: value for name, value in changes.items() if value != ""}}
            for name in (name for name, value in changes.items() if value == ""):
                fields.pop(name, None)
            _validate_lead(fields, "")
            if fields == row.fields:
                return LeadRecord.of(row), False
            updated = LeadRecord.of(await leads.update_fields(caller.team_id, lead_id, fields))
            if self._on_leads_changed is not None:
                await self._on_leads_changed(session, caller.team_id, [lead_id], new=False)
            return updated, True

    @traced("delete lead")
    async def delete(self, caller: Caller, lead_id: str) -> None:
        """Delete the lead with its sync states and timeline (never anything in a CRM). Refused while one of its
        syncs is writing to a CRM, whose outcome would then have no lead to be recorded against."""
        check_lead_id(lead_id)
        async with self._database.session(writes=True) as session:
            leads = LeadRepository(session)
            await leads.get(caller.team_id, lead_id, for_update=True)  # NotFound, and no sync starts meanwhile
            states = await SyncStateRepository(session).for_lead(caller.team_id, lead_id)
            if writing := [state.provider for state in states if state.intent_at is not None]:
                raise Unavailable(
                    f"A sync of this lead to {', '.join(writing)} is still writing; delete it once that is done.",
                    reason="SYNC_IN_PROGRESS",
                    retry_after=5.0,
                )
            await leads.delete(caller.team_id, lead_id)

    async def get(self, caller: Caller, lead_id: str) -> tuple[LeadRecord, list[LeadSyncView]]:
        """The lead, and its sync state with every provider it was ever synced to."""
        check_lead_id(lead_id)
        async with self._database.session() as session:
            lead = LeadRecord.of(await LeadRepository(session).get(caller.team_id, lead_id))
            states = await SyncStateRepository(session).for_lead(caller.team_id, lead_id)
        return lead, [LeadSyncView.of(state) for state in states]

    async def timeline(self, caller: Caller, lead_id: str, *, page_size: int = 0, page_token: str = "") -> TimelinePage:
        """The lead's events, newest first, ``page_size`` at a time."""
        check_lead_id(lead_id)
        if page_size < 0:
            raise InvalidArgument("pageSize must not be negative.", field_violations=[
                FieldViolation("page_size", "must be between 1 and 500, or 0 for the default of 50"),
            ])  # fmt: skip
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = _decode_page_token(page_token) if page_token else None
        async with self._database.session() as session:
            await LeadRepository(session).get(caller.team_id, lead_id)  # NotFound for other teams' leads
            events = await TimelineRepository(session).list_for_lead(
                caller.team_id, lead_id, limit=limit + 1, before=before
            )
        next_token = _encode_page_token(events[limit - 1]) if len(events) > limit else ""
        return TimelinePage(events=[TimelineEntry.of(event) for event in events[:limit]], next_page_token=next_token)


def _validate_changes(changes: Mapping[str, str]) -> None:
    """The changes of an update, before they are merged: names a lead may have, values it may hold."""
    violations: list[FieldViolation] = []
    if not changes:
        violations.append(FieldViolation("fields", 'name at least one field to change (a value of "" removes it)'))
    if len(changes) > MAX_FIELDS:
        violations.append(FieldViolation("fields", f"at most {MAX_FIELDS} fields per lead"))
    violations += [violation for name, value in changes.items() if (violation := _field_violation(name, value))]
    if violations:
        raise _lead_invalid(violations)


def _field_violation(name: str, value: str) -> FieldViolation | None:
    if not LEAD_FIELD_NAME.fullmatch(name):
        return FieldViolation(
            f"fields[{name[:64]}]", "field names start with a letter or _ and use letters, digits, _ . - (at most 64)"
        )
    if len(value) > MAX_VALUE_LENGTH:
        return FieldViolation(f"fields[{name}]", f"longer than {MAX_VALUE_LENGTH} characters")
    if _CONTROL_CHARACTER.search(value):
        return FieldViolation(f"fields[{name}]", "contains a control character (such as NUL)")
    return None


def _lead_invalid(violations: list[FieldViolation]) -> InvalidArgument:
    return InvalidArgument(
        "The lead is not valid: " + "; ".join(f"{v.field}: {v.description}" for v in violations) + ".",
        reason="LEAD_INVALID",
        field_violations=violations,
    )


def _validate_lead(fields: Mapping[str, str], external_id: str) -> None:
    violations: list[FieldViolation] = []
    if not fields:
        violations.append(FieldViolation("fields", "a lead needs at least one field, e.g. email"))
    if len(fields) > MAX_FIELDS:
        violations.append(FieldViolation("fields", f"at most {MAX_FIELDS} fields per lead"))
    violations += [violation for name, value in fields.items() if (violation := _field_violation(name, value))]
    email = fields.get("email")
    if email is not None and email.strip() and not _CONTROL_CHARACTER.search(email) and not _looks_like_email(email):
        violations.append(FieldViolation("fields[email]", f"{email[:80]!r} is not an email address"))
    if len(external_id) > MAX_EXTERNAL_ID_LENGTH or not external_id.isprintable():
        violations.append(FieldViolation("external_id", f"at most {MAX_EXTERNAL_ID_LENGTH} printable characters"))
    if violations:
        raise _lead_invalid(violations)


def _looks_like_email(value: str) -> bool:
    local, at, domain = value.strip().rpartition("@")
    return bool(at and local and "." in domain and not domain.startswith(".") and " " not in value.strip())


def check_lead_id(lead_id: str) -> None:
    """INVALID_ARGUMENT for an id too long to be one, NOT_FOUND for one of the wrong shape."""
    if len(lead_id) > MAX_LEAD_ID_LENGTH:
        raise InvalidArgument(
            f"A lead id is 32 hexadecimal characters; this one has {len(lead_id)}.",
            reason="LEAD_ID_INVALID",
            field_violations=[FieldViolation("lead_id", f"at most {MAX_LEAD_ID_LENGTH} characters")],
        )
    # A malformed id is indistinguishable from a missing one: no hint about id formats or other teams.
    if not RECORD_ID.fullmatch(lead_id):
        raise NotFound(f"Lead {lead_id[:64]!r} not found.", reason="LEAD_NOT_FOUND")


def _encode_page_token(event: TimelineEvent) -> str:  # the row: its id and time are the page position
    raw = f"{event.created_at.isoformat()}|{event.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created_at, _, event_id = raw.partition("|")
        return datetime.fromisoformat(created_at), event_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            "pageToken is not valid; pass the nextPageToken of the previous page.",
            reason="PAGE_TOKEN_INVALID",
            field_violations=[FieldViolation("page_token", "not a token this service issued")],
        ) from None
