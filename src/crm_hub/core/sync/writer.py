"""The CRM-facing half of a sync, for one lead or a batch: look up, let the policy decide, write, retry.

Touches no storage, so provider packages run it against their fakes (the conformance kit does); the engine
hands it tokens and a hook that records the intent of every write before it is sent.

A batch costs one call per kind of request it needs, at the CRM's batch size: one lookup by email (none for
``update`` on a CRM that upserts by email), then one call each for the upserts, updates and creates — the
provider splits them at ``max_batch_size``. Leads of one batch that share an email go in turns, so the
second sees the contact the first one created instead of creating another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from crm_hub.core.retry import RetryPolicy
from crm_hub.core.sync.model import DRY_RUN_ACTIONS, Decision, DuplicatePolicy, SyncAction, SyncItem, SyncOutcome
from crm_hub.errors import AlreadyExists, AuthExpired, CrmHubError, ProviderError, RateLimited, Unavailable
from crm_hub.providers import (
    DUPLICATE_CONTACT,
    ContactInput,
    ContactUpdate,
    CrmProvider,
    TokenSet,
    WriteResult,
)

__all__ = ["WRITE_OUTCOME_UNKNOWN", "BeforeWrite", "ContactWriter", "PlannedWrite"]


@dataclass
class PlannedWrite:
    """One lead as the policy decided it, before (and while) it is written."""

    item: SyncItem
    decision: Decision
    contact_id: str | None = None
    others: list[str] = field(default_factory=list)
    #: The contacts the lookup found for the email (None when there was no lookup).
    seen: tuple[str, ...] | None = None
    outcome: SyncOutcome | None = None
    #: When this sync's first attempt at the write began (an interrupted earlier one's, if any): a contact the
    #: CRM created since was created by this sync, whatever a repeated upsert answers.
    attempted_at: datetime | None = None


#: Called with the writes about to be sent, before any is: the engine records their intent there.
BeforeWrite = Callable[[Sequence[PlannedWrite]], Awaitable[None]]


class ContactWriter:
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
        missing_required: CrmHubError | None = None,
    ) -> SyncOutcome:
        """One lead: look up, decide by ``policy`` and (unless ``dry_run``) write; raises the lead's error."""
        item = SyncItem("lead", payload, email, missing_required)
        [outcome] = await self.apply_batch(crm, tokens, [item], DuplicatePolicy.parse(policy), dry_run)
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def apply_batch(
        self,
        crm: CrmProvider,
        tokens: TokenSet,
        items: Sequence[SyncItem],
        policy: DuplicatePolicy,
        dry_run: bool,
        *,
        before_write: BeforeWrite | None = None,
        done: MutableMapping[str, SyncOutcome] | None = None,
    ) -> list[SyncOutcome]:
        """An outcome per item, in order; a lead's own failure is in its outcome's ``error``.

        A failure of a whole call (an outage past the retries, expired credentials) raises; the outcomes
        already reached are in ``done`` (by item key), which a second run with the same ``done`` — after a
        token refresh, say — keeps instead of writing those leads again.
        """
        done = {} if done is None else done
        for turn in _turns([item for item in items if item.key not in done]):
            planned = await self._decide(crm, tokens, turn, policy, dry_run)
            if dry_run:
                for write in planned:
                    done[write.item.key] = write.outcome or _previewed(crm, write)
                continue
            for write in planned:
                if write.outcome is not None:
                    done[write.item.key] = write.outcome
            pending = [write for write in planned if write.outcome is None]
            now = datetime.now(UTC)
            for write in pending:
                write.attempted_at = min(now, write.item.interrupted_at or now)
            if pending and before_write is not None:
                await before_write(pending)
            await self._write(crm, tokens, pending, policy, done)
        return [done[item.key] for item in items]

    # -- deciding --------------------------------------------------------------------------------------

    async def _decide(
        self, crm: CrmProvider, tokens: TokenSet, items: Sequence[SyncItem], policy: DuplicatePolicy, dry_run: bool
    ) -> list[PlannedWrite]:
        # update without a dry run on a CRM that upserts by email needs no lookup: one call does both.
        upsert = policy is DuplicatePolicy.UPDATE and not dry_run and crm.capabilities.upsert_by_email
        to_look_up = [item.email for item in items if item.email and (not upsert or item.interrupted_seen is not None)]
        found = await self._lookup(crm, tokens, to_look_up) if to_look_up else {}
        planned = []
        for item in items:
            matches = found.get(item.email, []) if item.email else None
            appeared = [cid for cid in matches or () if cid not in (item.interrupted_seen or ())]
            if item.interrupted_seen is not None and appeared:
                write = PlannedWrite(
                    item, Decision.CREATE, appeared[0], [cid for cid in matches or () if cid != appeared[0]]
                )
                write.outcome = _recovered(crm, write, dry_run)
            elif upsert and item.email:
                write = PlannedWrite(item, Decision.UPSERT)
            else:
                write = _by_policy(crm, item, policy, matches)
            if write.outcome is not None:
                pass  # recovered: nothing to decide
            elif write.decision in (Decision.CREATE, Decision.UPSERT) and item.missing_required is not None:
                write.outcome = _failed(item, item.missing_required, dry_run)
            elif write.decision is Decision.SKIP and not dry_run:
                write.outcome = _skipped(crm, write)
            elif write.decision is Decision.CONFLICT and not dry_run:
                write.outcome = _failed(item, _duplicate(crm, write.contact_id or "", write.others), dry_run)
            planned.append(write)
        return planned

    async def _lookup(self, crm: CrmProvider, tokens: TokenSet, emails: Sequence[str]) -> dict[str, list[str]]:
        return await self._retry.run(lambda: crm.find_contacts_by_email(tokens, sorted(set(emails))))

    # -- writing ---------------------------------------------------------------------------------------

    async def _write(
        self,
        crm: CrmProvider,
        tokens: TokenSet,
        planned: Sequence[PlannedWrite],
        policy: DuplicatePolicy,
        done: MutableMapping[str, SyncOutcome],
    ) -> None:
        upserts = [write for write in planned if write.decision is Decision.UPSERT]
        if upserts:  # idempotent: upserting twice by email leaves one contact
            contacts = [ContactInput(properties=w.item.payload, email=w.item.email) for w in upserts]
            results = await self._retry.run(lambda: crm.upsert_contacts_by_email(tokens, contacts))
            answered, stopped = _until_stopped(_paired(crm, upserts, results))
            for write, result in answered:
                done[write.item.key] = _written(crm, write, result)
            if stopped is not None:
                raise stopped
        creates = [write for write in planned if write.decision is Decision.CREATE]
        updates = [write for write in planned if write.decision is Decision.UPDATE]
        answered, stopped = _until_stopped(await self._update(crm, tokens, updates))
        for write, result in answered:
            if result.error is not None and result.error.reason == "NOT_FOUND":
                # Deleted in the CRM since our lookup: the update policy then creates it anew.
                write.decision, write.contact_id = Decision.CREATE, None
                if write.item.missing_required is not None:
                    done[write.item.key] = _failed(write.item, write.item.missing_required, dry_run=False)
                else:
                    creates.append(write)
            else:
                done[write.item.key] = _written(crm, write, result)
        if stopped is not None:
            raise stopped
        racing: list[PlannedWrite] = []
        answered, stopped = _until_stopped(await self._create(crm, tokens, creates))
        for write, result in answered:
            existing = result.error.metadata.get("contact_id") if result.error is not None else None
            raced = result.error is not None and result.error.reason == DUPLICATE_CONTACT and existing
            if raced and policy is not DuplicatePolicy.CREATE_NEW:
                # The contact appeared between our lookup and our create (another sync of the same email, here
                # or in another replica): the policy applies to it rather than failing.
                write.contact_id = existing
                if policy is DuplicatePolicy.SKIP:
                    done[write.item.key] = _skipped(crm, write)
                else:
                    write.decision = Decision.UPDATE
                    racing.append(write)
                continue
            done[write.item.key] = _written(crm, write, result)
        if stopped is not None:
            raise stopped
        answered, stopped = _until_stopped(await self._update(crm, tokens, racing))
        for write, result in answered:
            done[write.item.key] = _written(crm, write, result)
        if stopped is not None:
            raise stopped

    async def _update(
        self, crm: CrmProvider, tokens: TokenSet, updates: Sequence[PlannedWrite]
    ) -> list[tuple[PlannedWrite, WriteResult]]:
        if not updates:
            return []
        changes = [
            ContactUpdate(contact_id=w.contact_id or "", properties=w.item.payload, email=w.item.email) for w in updates
        ]
        return _paired(crm, updates, await self._retry.run(lambda: crm.update_contacts(tokens, changes)))

    async def _create(
        self, crm: CrmProvider, tokens: TokenSet, creates: Sequence[PlannedWrite]
    ) -> list[tuple[PlannedWrite, WriteResult]]:
        """Create, never twice: after a failure that the CRM may have applied, look the emails up again; a
        contact that appeared is the lost answer's, and only the leads with none are sent once more."""
        if not creates:
            return []
        try:
            return await self._create_once(crm, tokens, creates)
        except ProviderError as error:
            if not (error.retryable and error.maybe_applied):
                raise
            unknowable = [write for write in creates if write.seen is None or not write.item.email]
            if unknowable:
                raise Unavailable(
                    f"{crm.label} failed while creating contacts ({error.message}); they may or may not have been "
                    "created — check before syncing again.",
                    provider=crm.name,
                    reason=WRITE_OUTCOME_UNKNOWN,
                ) from error
            found = await self._lookup(crm, tokens, [write.item.email or "" for write in creates])
            answered: list[tuple[PlannedWrite, WriteResult]] = []
            again: list[PlannedWrite] = []
            for write in creates:
                appeared = [cid for cid in found.get(write.item.email or "", []) if cid not in (write.seen or ())]
                if appeared:
                    answered.append((write, WriteResult(contact_id=appeared[0], created=True)))
                elif _may_be_in_flight(error) and not crm.capabilities.unique_email:
                    # No answer came (a timeout, a reset, a gateway timeout): the create may still be on its way
                    # and land after our lookup. Sending it again could make two; its intent stays open, to be
                    # checked again once it surely arrived or never will.
                    answered.append((write, WriteResult(error=_outcome_unknown(crm, error))))
                else:
                    # The CRM answered and nothing was written — or it refuses a second contact with the email,
                    # so a first one landing meanwhile makes this one fail, naming it: one more try is safe.
                    again.append(write)
            retried = await self._create_once(crm, tokens, again) if again else []
            return answered + [(write, _ours_if_it_appeared(write, result)) for write, result in retried]

    async def _create_once(
        self, crm: CrmProvider, tokens: TokenSet, creates: Sequence[PlannedWrite]
    ) -> list[tuple[PlannedWrite, WriteResult]]:
        contacts = [ContactInput(properties=w.item.payload, email=w.item.email) for w in creates]
        results = await self._retry.run(lambda: crm.create_contacts(tokens, contacts), idempotent=False)
        return _paired(crm, creates, results)


#: Answers a gateway gives when the CRM behind it did not answer in time: the request may still be running there.
_GATEWAY_TIMEOUTS = (504, 524)
#: The reason of a write whose outcome cannot be known yet; its intent stays open until it is reconciled.
WRITE_OUTCOME_UNKNOWN = "WRITE_OUTCOME_UNKNOWN"


def _may_be_in_flight(error: ProviderError) -> bool:
    return error.status is None or error.status in _GATEWAY_TIMEOUTS


def _outcome_unknown(crm: CrmProvider, error: ProviderError) -> Unavailable:
    return Unavailable(
        f"{crm.label} did not answer the create in time ({error.message}); the contact may still appear. crm_hub "
        "checks again in a few minutes and records what happened — no second contact is made meanwhile.",
        provider=crm.name,
        reason=WRITE_OUTCOME_UNKNOWN,
    )


def _ours_if_it_appeared(write: PlannedWrite, result: WriteResult) -> WriteResult:
    """A retried create refused as a duplicate of a contact that was not there before the first try: that
    contact is the first try's (its answer was lost)."""
    existing = result.error.metadata.get("contact_id") if result.error is not None else None
    duplicate = result.error is not None and result.error.reason == DUPLICATE_CONTACT
    if duplicate and existing and existing not in (write.seen or ()):
        return WriteResult(contact_id=existing, created=True)
    return result


def _turns(items: Sequence[SyncItem]) -> list[list[SyncItem]]:
    """Items in turns, no email twice in a turn: the n-th lead with an email goes in turn n."""
    turns: list[list[SyncItem]] = []
    seen: dict[str, int] = {}
    for item in items:
        index = seen.get(item.email, 0) if item.email else 0
        if item.email:
            seen[item.email] = index + 1
        while len(turns) <= index:
            turns.append([])
        turns[index].append(item)
    return turns


def _by_policy(crm: CrmProvider, item: SyncItem, policy: DuplicatePolicy, matches: list[str] | None) -> PlannedWrite:
    seen = tuple(matches) if matches is not None else None
    if not matches:
        return PlannedWrite(item, Decision.CREATE, seen=seen)
    # Deterministic choice among several matches: the provider lists them oldest first.
    chosen, others = matches[0], list(matches[1:])
    if policy is DuplicatePolicy.SKIP:
        return PlannedWrite(item, Decision.SKIP, chosen, others, seen)
    if policy is DuplicatePolicy.UPDATE:
        return PlannedWrite(item, Decision.UPDATE, chosen, others, seen)
    if crm.capabilities.unique_email:
        return PlannedWrite(item, Decision.CONFLICT, chosen, others, seen)  # the CRM would refuse a duplicate
    return PlannedWrite(item, Decision.CREATE, None, list(matches), seen)  # a new contact beside the matches


def _paired(
    crm: CrmProvider, writes: Sequence[PlannedWrite], results: Sequence[WriteResult]
) -> list[tuple[PlannedWrite, WriteResult]]:
    if len(results) != len(writes):
        raise ProviderError(
            f"{crm.label} returned {len(results)} results for {len(writes)} records.", provider=crm.name
        )
    return list(zip(writes, results, strict=True))


def _until_stopped(
    pairs: list[tuple[PlannedWrite, WriteResult]],
) -> tuple[list[tuple[PlannedWrite, WriteResult]], CrmHubError | None]:
    """The writes the CRM answered, and the error that stopped the others part-way through a batch — expired
    credentials or a spent rate limit, refused before anything was applied. That error is raised once the
    answered ones are kept (in ``done``), so those leads are written after a refresh or a wait, not failed."""
    stopped = [result.error for _, result in pairs if isinstance(result.error, AuthExpired | RateLimited)]
    if not stopped:
        return pairs, None
    return [(write, result) for write, result in pairs if result.error not in stopped], stopped[0]


def _created_by_this_sync(write: PlannedWrite, result: WriteResult) -> bool:
    """An upsert sent again — after a lost answer, or by a job resuming a killed worker's batch — answers "not
    new" for the contact its first attempt created. The CRM's creation time tells: a contact created after this
    sync began writing is this sync's (the contact locks keep other crm_hub syncs of the email out). No clock
    skew is allowed for: a CRM clock behind ours only makes this answer "updated", as before."""
    if write.decision is not Decision.UPSERT or result.created_at is None or write.attempted_at is None:
        return False
    return result.created_at >= write.attempted_at


def _written(crm: CrmProvider, write: PlannedWrite, result: WriteResult) -> SyncOutcome:
    if result.error is not None:
        return _failed(write.item, _domain_error(crm, result.error), dry_run=False, seen=write.seen)
    action = SyncAction.CREATED if result.created or _created_by_this_sync(write, result) else SyncAction.UPDATED
    return SyncOutcome(
        action=action,
        message=f"Contact {action} successfully.",
        payload=write.item.payload,
        dry_run=False,
        contact_id=result.contact_id,
        other_contact_ids=write.others,
        seen=write.seen,
    )


def _recovered(crm: CrmProvider, write: PlannedWrite, dry_run: bool) -> SyncOutcome:
    return SyncOutcome(
        action=SyncAction.CREATED,
        message=f"{crm.label} contact created by an earlier sync that was interrupted before it could record it.",
        payload=write.item.payload,
        dry_run=dry_run,
        contact_id=write.contact_id,
        other_contact_ids=write.others,
        recovered=True,
    )


def _skipped(crm: CrmProvider, write: PlannedWrite) -> SyncOutcome:
    return SyncOutcome(
        action=SyncAction.SKIPPED,
        message=f"A {crm.label} contact with this email exists; left untouched (policy skip).",
        payload=write.item.payload,
        dry_run=False,
        contact_id=write.contact_id,
        other_contact_ids=write.others,
        seen=write.seen,
    )


def _failed(item: SyncItem, error: CrmHubError, dry_run: bool, *, seen: tuple[str, ...] | None = None) -> SyncOutcome:
    return SyncOutcome(
        action=SyncAction.FAILED,
        message=error.message,
        payload=item.payload,
        dry_run=dry_run,
        contact_id=error.metadata.get("contact_id") or None,
        error=error,
        seen=seen,
    )


def _previewed(crm: CrmProvider, write: PlannedWrite) -> SyncOutcome:
    return SyncOutcome(
        action=DRY_RUN_ACTIONS[write.decision],
        message=_dry_run_message(crm.label, write),
        payload=write.item.payload,
        dry_run=True,
        contact_id=write.contact_id,
        other_contact_ids=write.others,
    )


def _duplicate(crm: CrmProvider, existing: str, others: Sequence[str]) -> AlreadyExists:
    metadata = {"provider": crm.name}
    if existing:
        metadata["contact_id"] = existing
    if others:
        metadata["other_contact_ids"] = ",".join(others)
    return AlreadyExists(
        f"{crm.label} already has a contact with this email"
        + (f" (id {existing})" if existing else "")
        + "; use duplicatePolicy update or skip to sync into it.",
        reason=DUPLICATE_CONTACT,
        metadata=metadata,
    )


def _domain_error(crm: CrmProvider, error: ProviderError) -> CrmHubError:
    """A provider's duplicate refusal is ALREADY_EXISTS with the existing id; everything else as classified."""
    if error.reason != DUPLICATE_CONTACT:
        return error
    duplicate = _duplicate(crm, error.metadata.get("contact_id", ""), ())
    duplicate.metadata.update({key: value for key, value in error.metadata.items() if key not in duplicate.metadata})
    return duplicate


def _dry_run_message(label: str, write: PlannedWrite) -> str:
    if write.decision is Decision.SKIP:
        return f"Dry run: a {label} contact with this email exists and would be left untouched."
    if write.decision in (Decision.UPDATE, Decision.UPSERT):
        return f"Dry run: the existing {label} contact would be updated."
    if write.decision is Decision.CONFLICT:
        return f"Dry run: {label} already has a contact with this email and would refuse a new one (policy create_new)."
    if write.others:
        return (
            f"Dry run: a new {label} contact would be created beside the {len(write.others)} with this email "
            f"(policy create_new), unless duplicate rules set up in {label} refuse it."
        )
    return f"Dry run: a new {label} contact would be created."
