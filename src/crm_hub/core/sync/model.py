"""The words of syncing: policies, actions, the plan a policy makes for a lead, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from crm_hub.errors import CrmHubError, FieldViolation, InvalidArgument

__all__ = [
    "DRY_RUN_ACTIONS",
    "DUPLICATE_POLICIES",
    "Decision",
    "DuplicatePolicy",
    "SyncAction",
    "SyncItem",
    "SyncOutcome",
    "fingerprint",
]


class DuplicatePolicy(StrEnum):
    """What a sync does when the CRM already has a contact with the lead's email."""

    SKIP = "skip"
    UPDATE = "update"
    CREATE_NEW = "create_new"

    @classmethod
    def parse(cls, value: str, *, field_name: str = "duplicatePolicy") -> DuplicatePolicy:
        """``""`` is the default (update); anything else unknown is INVALID_ARGUMENT naming ``field_name``."""
        try:
            return cls(value or cls.UPDATE)
        except ValueError:
            raise InvalidArgument(
                f"duplicatePolicy must be one of {', '.join(DUPLICATE_POLICIES)}, not {value[:40]!r}.",
                reason="SYNC_REQUEST_INVALID",
                field_violations=[FieldViolation(field_name, f"must be one of {', '.join(DUPLICATE_POLICIES)}")],
            ) from None


DUPLICATE_POLICIES: tuple[str, ...] = tuple(policy.value for policy in DuplicatePolicy)


class SyncAction(StrEnum):
    """A lead's outcome: what happened in the CRM, or (``would_*``) what a dry run says would happen."""

    CREATED = "created"
    UPDATED = "updated"
    SKIPPED = "skipped"
    #: Nothing to send: the payload and mapping are what was last written (policy update or skip).
    UNCHANGED = "unchanged"
    FAILED = "failed"
    #: A job was cancelled before it reached the lead.
    CANCELLED = "cancelled"
    WOULD_CREATE = "would_create"
    WOULD_UPDATE = "would_update"
    WOULD_SKIP = "would_skip"
    #: create_new onto an email the CRM already has, in a CRM that refuses a second contact with it.
    WOULD_CONFLICT = "would_conflict"

    @property
    def succeeded(self) -> bool:
        return self not in (SyncAction.FAILED, SyncAction.CANCELLED)


class Decision(StrEnum):
    """What the duplicate policy decided for one lead, before any write."""

    CREATE = "create"
    UPDATE = "update"
    #: Create-or-update by email in one call (the CRM upserts by email): no lookup was needed.
    UPSERT = "upsert"
    SKIP = "skip"
    #: create_new onto an existing email in a CRM with unique emails: refused without a write.
    CONFLICT = "conflict"


DRY_RUN_ACTIONS: dict[Decision, SyncAction] = {
    Decision.CREATE: SyncAction.WOULD_CREATE,
    Decision.UPDATE: SyncAction.WOULD_UPDATE,
    Decision.UPSERT: SyncAction.WOULD_UPDATE,
    Decision.SKIP: SyncAction.WOULD_SKIP,
    Decision.CONFLICT: SyncAction.WOULD_CONFLICT,
}


def fingerprint(value: Mapping[str, Any]) -> str:
    """SHA-256 of ``value`` as canonical JSON: equal for equal payloads (or mappings), whatever the key order."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class SyncItem:
    """One lead on its way to the CRM: the payload in the CRM's types and the email duplicates match by.

    ``missing_required`` is raised for the lead if the policy decides to create a contact (required values
    only matter for a new one). ``key`` is the caller's handle on the item (the lead id).
    """

    key: str
    payload: dict[str, Any]
    email: str | None
    missing_required: CrmHubError | None = None
    #: An earlier write for this lead was interrupted (the process died) after a lookup that saw these
    #: contacts: one that appeared since is the one that write created.
    interrupted_seen: tuple[str, ...] | None = None
    #: When that interrupted write's intent was recorded (None when no write was left open).
    interrupted_at: datetime | None = None


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync did (or, in a dry run, would do) for one lead; ``error`` is set when it failed."""

    action: SyncAction
    message: str
    payload: dict[str, Any]
    dry_run: bool
    contact_id: str | None = None
    other_contact_ids: list[str] = field(default_factory=list)
    error: CrmHubError | None = None
    #: The contact ids a lookup saw before a create was sent (None when there was no lookup).
    seen: tuple[str, ...] | None = None
    #: The outcome of an interrupted earlier write, found in the CRM rather than written now.
    recovered: bool = False
