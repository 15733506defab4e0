"""Syncing a lead into a CRM: payload, duplicate policy, dry run, retries, timeline and status.

The path of one sync: load the lead (team-scoped) and the saved mapping → build and validate the payload
against the CRM's fields → look up contacts with the lead's email → apply the duplicate policy → write
(or stop here on a dry run) → append a timeline event → return the outcome.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crm_hub.core.caller import Caller
from crm_hub.core.credentials import CREDENTIALS_EXPIRED, CredentialStore
from crm_hub.core.fields import FieldCatalog
from crm_hub.core.leads import check_lead_id
from crm_hub.core.payload import build_payload, required_values_missing
from crm_hub.core.retry import RetryPolicy
from crm_hub.errors import (
    AlreadyExists,
    CrmHubError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ProviderError,
    RateLimited,
    RefreshRejected,
    Unavailable,
)
from crm_hub.notifications import Notification, NotificationDispatcher, NotificationKind
from crm_hub.plugins import PluginHost
from crm_hub.providers import (
    DUPLICATE_CONTACT,
    ContactInput,
    ContactUpdate,
    CrmField,
    CrmProvider,
    TokenSet,
    WriteResult,
)
from crm_hub.storage import (
    Database,
    IntegrationRepository,
    IntegrationStatus,
    LeadRepository,
    TimelineRepository,
    utcnow,
)

__all__ = ["DUPLICATE_POLICIES", "ContactWriter", "SyncEngine", "SyncOutcome"]

DUPLICATE_POLICIES = ("skip", "update", "create_new")
DEFAULT_POLICY = "update"


@dataclass(frozen=True)
class SyncOutcome:
    action: str
    message: str
    payload: dict[str, Any]
    dry_run: bool
    contact_id: str | None = None
    other_contact_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    """What the duplicate policy decided, before any write."""

    action: str  # created | updated | skipped | upserted | conflict (dry run of create_new on a match)
    contact_id: str | None
    others: list[str]
    #: The contacts the lookup found (None when there was no lookup): what a retry checks against.
    seen: tuple[str, ...] | None = None


class ContactWriter:
    """The CRM-facing half of a sync: duplicate lookup, the policy's decision, the write, retries.

    Touches no storage, so provider packages run it against their fakes (the conformance suite does).
    """

    def __init__(self, retry: RetryPolicy | None = None) -> None:
        self._retry = retry or RetryPolicy()

    async def apply(
        self,
        crm: CrmProvider,
        tokens: TokenSet,
        payload: dict[str, Any],
        email: str | None,
        policy: str,
        dry_run: bool,
        *,
        missing_required: InvalidArgument | None = None,
    ) -> SyncOutcome:
        """Look up, decide by ``policy`` and (unless ``dry_run``) write. No storage: tokens come in.

        ``missing_required`` is raised if the decision is to create a contact (required values only matter
        for a new contact), before anything is written.
        """
        plan = await self._plan(crm, tokens, email, policy, dry_run)
        if missing_required is not None and plan.action in ("created", "upserted"):
            raise missing_required
        if dry_run:
            return SyncOutcome(
                action=_DRY_RUN_ACTIONS[plan.action],
                message=_dry_run_message(crm.label, plan),
                payload=payload,
                dry_run=True,
                contact_id=plan.contact_id,
                other_contact_ids=plan.others,
            )
        if plan.action == "skipped":
            return _skipped(crm, payload, plan.contact_id, plan.others)
        result = await self._write(crm, tokens, payload, email, plan)
        if result.error is not None and result.error.reason == DUPLICATE_CONTACT and policy != "create_new":
            # The contact appeared between our lookup and our create (another sync of the same email, here or
            # in another replica): apply the policy to it rather than failing.
            existing = result.error.metadata.get("contact_id")
            if existing and policy == "skip":
                return _skipped(crm, payload, existing, plan.others)
            if existing:
                result = await self._write(crm, tokens, payload, email, _Plan("updated", existing, plan.others))
        if result.error is not None:
            raise _domain_error(crm, result.error)
        action = "created" if result.created else "updated"
        return SyncOutcome(
            action=action,
            message=f"Contact {action} successfully.",
            payload=payload,
            dry_run=False,
            contact_id=result.contact_id,
            other_contact_ids=plan.others,
        )

    async def _plan(self, crm: CrmProvider, tokens: TokenSet, email: str | None, policy: str, dry_run: bool) -> _Plan:
        # update without a dry run on a CRM that upserts by email needs no lookup: one call does both.
        if policy == "update" and not dry_run and email and crm.capabilities.upsert_by_email:
            return _Plan("upserted", None, [])
        if policy == "create_new" and not dry_run:
            return _Plan("created", None, [])
        matches = await self._lookup(crm, tokens, email)
        # Deterministic choice among several matches: the provider lists them oldest first.
        chosen, others, seen = (matches[0], matches[1:], tuple(matches)) if matches else (None, [], ())
        if chosen is None:
            return _Plan("created", None, [], seen)
        if policy == "skip":
            return _Plan("skipped", chosen, others, seen)
        if policy == "update":
            return _Plan("updated", chosen, others, seen)
        if crm.capabilities.unique_email:
            return _Plan("conflict", chosen, others, seen)  # create_new, dry run: the CRM would refuse a duplicate
        return _Plan("created", None, matches, seen)  # the CRM takes duplicates: a new contact beside the matches

    async def _lookup(self, crm: CrmProvider, tokens: TokenSet, email: str | None) -> list[str]:
        if not email:
            return []
        found = await self._retry.run(lambda: crm.find_contacts_by_email(tokens, [email]))
        return found.get(email, [])

    async def _write(
        self, crm: CrmProvider, tokens: TokenSet, payload: dict[str, Any], email: str | None, plan: _Plan
    ) -> WriteResult:
        contact = ContactInput(properties=payload, email=email)
        if plan.action == "upserted":  # idempotent: upserting twice by email leaves one contact
            return _one(crm, await self._retry.run(lambda: crm.upsert_contacts_by_email(tokens, [contact])))
        if plan.action == "updated":  # idempotent: the same values set twice
            update = ContactUpdate(contact_id=plan.contact_id or "", properties=payload)
            result = _one(crm, await self._retry.run(lambda: crm.update_contacts(tokens, [update])))
            if result.error is None or result.error.reason != "NOT_FOUND":
                return result
            # Deleted in the CRM since our lookup: the update policy then creates it anew.
        return await self._create(crm, tokens, contact, plan)

    async def _create(self, crm: CrmProvider, tokens: TokenSet, contact: ContactInput, plan: _Plan) -> WriteResult:
        """Create, never twice: a failure after which the contact may exist is checked by email, not retried."""
        try:
            return _one(crm, await self._retry.run(lambda: crm.create_contacts(tokens, [contact]), idempotent=False))
        except ProviderError as error:
            if not (error.retryable and error.maybe_applied):
                raise
            if plan.seen is None or not contact.email:
                raise Unavailable(
                    f"{crm.label} failed while creating the contact ({error.message}); it may or may not have been "
                    "created — check before syncing again.",
                    provider=crm.name,
                    reason="WRITE_OUTCOME_UNKNOWN",
                ) from error
            appeared = [cid for cid in await self._lookup(crm, tokens, contact.email) if cid not in plan.seen]
            if appeared:
                return WriteResult(contact_id=appeared[0], created=True)  # the lost answer's contact
            # Nothing was written: one more try is safe.
            return _one(crm, await self._retry.run(lambda: crm.create_contacts(tokens, [contact]), idempotent=False))


def _one(crm: CrmProvider, results: list[WriteResult]) -> WriteResult:
    if len(results) != 1:
        raise ProviderError(f"{crm.label} returned {len(results)} results for one record.", provider=crm.name)
    return results[0]


def _skipped(crm: CrmProvider, payload: dict[str, Any], contact_id: str | None, others: list[str]) -> SyncOutcome:
    return SyncOutcome(
        action="skipped",
        message=f"A {crm.label} contact with this email exists; left untouched (policy skip).",
        payload=payload,
        dry_run=False,
        contact_id=contact_id,
        other_contact_ids=others,
    )


class SyncEngine:
    def __init__(
        self,
        database: Database,
        plugins: PluginHost,
        credentials: CredentialStore,
        catalog: FieldCatalog,
        notifications: NotificationDispatcher,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._database = database
        self._plugins = plugins
        self._credentials = credentials
        self._catalog = catalog
        self._notifications = notifications
        self._writer = ContactWriter(retry)
        # Weak values: a lock lives only while a sync holds or waits for it, so the map does not grow.
        self._contact_locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def sync_lead(
        self,
        caller: Caller,
        lead_id: str,
        *,
        provider: str,
        duplicate_policy: str = "",
        dry_run: bool = False,
    ) -> SyncOutcome:
        policy = duplicate_policy or DEFAULT_POLICY
        violations = []
        if not provider:
            violations.append(FieldViolation("provider", "name the CRM to sync to, e.g. hubspot"))
        if policy not in DUPLICATE_POLICIES:
            violations.append(FieldViolation("duplicatePolicy", f"must be one of {', '.join(DUPLICATE_POLICIES)}"))
        if violations:
            raise InvalidArgument(
                "The sync request is not valid: " + "; ".join(f"{v.field} {v.description}" for v in violations) + ".",
                reason="SYNC_REQUEST_INVALID",
                field_violations=violations,
            )
        crm = self._plugins.providers().get(provider)
        check_lead_id(lead_id)
        started = time.perf_counter()
        async with self._database.session() as session:
            lead = await LeadRepository(session).get(caller.team_id, lead_id)
            integration = await IntegrationRepository(session).get(caller.team_id, crm.name)
        if integration is None or integration.status == IntegrationStatus.DISCONNECTED:
            raise FailedPrecondition(
                f"{crm.label} is not connected for your team; connect it first.",
                reason="PROVIDER_NOT_CONNECTED",
                metadata={"provider": crm.name},
            )
        if integration.status == IntegrationStatus.ERROR and integration.error == CREDENTIALS_EXPIRED:
            # The refresh token was refused: every call would fail the same way until an admin reconnects.
            raise FailedPrecondition(
                f"{crm.label} credentials expired; an admin must reconnect the integration.",
                reason=RefreshRejected.default_reason,
                metadata={"provider": crm.name},
            )
        mapping: dict[str, str] = dict(integration.settings.get("mapping") or {})
        if not mapping:
            raise FailedPrecondition(
                f"No field mapping is saved for {crm.label}; save one with POST /integrations/{crm.name}/mapping.",
                reason="MAPPING_MISSING",
                metadata={"provider": crm.name},
            )
        try:
            fields = await self._catalog.fields_of(caller, crm)
            payload = build_payload(lead.fields, mapping, fields, provider_label=crm.label, check_required=False)
            missing = required_values_missing(payload, mapping, fields, provider_label=crm.label)
            email = _identity_email(payload, fields, lead.fields)
            # One sync per contact at a time in this process: two syncs of one email must not both create it.
            async with self._contact_locks.setdefault((caller.team_id, crm.name, email or lead.id), asyncio.Lock()):
                outcome = await self._credentials.call(
                    caller,
                    crm,
                    lambda tokens: self._writer.apply(
                        crm, tokens, payload, email, policy, dry_run, missing_required=missing
                    ),
                )
        except CrmHubError as error:
            await self._record(caller, crm.name, lead.id, started, dry_run, failure=error, shown=integration.error)
            if not dry_run and not isinstance(error, RefreshRejected):  # that one is told as credentials_expired
                self._notify("sync_failed", caller, crm.name, lead.id, error.message, reason=error.reason)
            raise
        await self._record(caller, crm.name, lead.id, started, dry_run, outcome=outcome, shown=integration.error)
        if not dry_run:
            self._notify("sync_succeeded", caller, crm.name, lead.id, outcome.message, contact_id=outcome.contact_id)
        return outcome

    def _notify(
        self,
        kind: NotificationKind,
        caller: Caller,
        provider: str,
        lead_id: str,
        message: str,
        *,
        reason: str | None = None,
        contact_id: str | None = None,
    ) -> None:
        self._notifications.publish(
            Notification(
                kind=kind,
                team_id=caller.team_id,
                provider=provider,
                lead_id=lead_id,
                contact_id=contact_id,
                message=message,
                reason=reason,
                request_id=caller.request_id,
            )
        )

    async def _record(
        self,
        caller: Caller,
        provider: str,
        lead_id: str,
        started: float,
        dry_run: bool,
        *,
        outcome: SyncOutcome | None = None,
        failure: CrmHubError | None = None,
        shown: str | None = None,
    ) -> None:
        """Append the timeline event; keep status's last sync, and its error about an exhausted CRM quota
        (``shown`` is the error status shows now), up to date."""
        async with self._database.session() as session:
            integrations = IntegrationRepository(session)
            await TimelineRepository(session).append(
                caller.team_id,
                provider=provider,
                lead_id=lead_id,
                action=outcome.action if outcome else "failed",
                contact_id=(outcome.contact_id if outcome else failure.metadata.get("contact_id") if failure else None),
                dry_run=dry_run,
                error_reason=failure.reason if failure else None,
                message=outcome.message if outcome else (failure.message if failure else ""),
                actor=caller.actor,
                request_id=caller.request_id,
                duration_ms=round((time.perf_counter() - started) * 1000),
            )
            if outcome and not dry_run:
                await integrations.mark_synced(caller.team_id, provider, utcnow())
                if shown:
                    await integrations.upsert_status(caller.team_id, provider, IntegrationStatus.CONNECTED)
            if isinstance(failure, RateLimited) and not failure.retryable:
                # A quota that waiting seconds won't restore (a daily API limit): status must say so.
                await integrations.upsert_status(caller.team_id, provider, IntegrationStatus.CONNECTED, failure.message)


def _identity_email(payload: dict[str, Any], fields: list[CrmField], lead_fields: Mapping[str, str]) -> str | None:
    """The email duplicates are matched by: the value mapped onto the CRM's email field (whatever the lead
    calls it), else the lead's own ``email`` field. Lowercased, as providers key their answers."""
    by_name = {field.name: field for field in fields}
    mapped = [value for name, value in payload.items() if by_name[name].type == "email" and name.lower() == "email"]
    mapped = mapped or [value for name, value in payload.items() if by_name[name].type == "email"]
    email = str(mapped[0]) if mapped else lead_fields.get("email", "")
    return email.strip().lower() or None


def _domain_error(crm: CrmProvider, error: ProviderError) -> CrmHubError:
    """A provider's duplicate refusal is ALREADY_EXISTS with the existing id; everything else as classified."""
    if error.reason != DUPLICATE_CONTACT:
        return error
    existing = error.metadata.get("contact_id", "")
    return AlreadyExists(
        f"{crm.label} already has a contact with this email"
        + (f" (id {existing})" if existing else "")
        + "; use duplicatePolicy update or skip to sync into it.",
        reason=DUPLICATE_CONTACT,
        metadata={**error.metadata, "provider": crm.name},
    )


_DRY_RUN_ACTIONS = {
    "created": "would_create",
    "updated": "would_update",
    "skipped": "would_skip",
    "conflict": "would_conflict",
}


def _dry_run_message(label: str, plan: _Plan) -> str:
    if plan.action == "skipped":
        return f"Dry run: a {label} contact with this email exists and would be left untouched."
    if plan.action == "updated":
        return f"Dry run: the existing {label} contact would be updated."
    if plan.action == "conflict":
        return f"Dry run: {label} already has a contact with this email and would refuse a new one (policy create_new)."
    if plan.others:
        return (
            f"Dry run: a new {label} contact would be created beside the {len(plan.others)} with this email "
            f"(policy create_new), unless duplicate rules set up in {label} refuse it."
        )
    return f"Dry run: a new {label} contact would be created."
