"""The sync engine: the policies and outcomes (model), the CRM-facing writer, and the engine around them."""

from __future__ import annotations

from crm_hub.core.sync.engine import BatchResult, SyncEngine, SyncTarget, identity_email
from crm_hub.core.sync.model import (
    DUPLICATE_POLICIES,
    Decision,
    DuplicatePolicy,
    SyncAction,
    SyncItem,
    SyncOutcome,
    fingerprint,
)
from crm_hub.core.sync.writer import ContactWriter, PlannedWrite

__all__ = [
    "DUPLICATE_POLICIES",
    "BatchResult",
    "ContactWriter",
    "Decision",
    "DuplicatePolicy",
    "PlannedWrite",
    "SyncAction",
    "SyncEngine",
    "SyncItem",
    "SyncOutcome",
    "SyncTarget",
    "fingerprint",
    "identity_email",
]
