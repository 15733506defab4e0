"""The ContactWriter's requests, as a provider receives them."""

from __future__ import annotations

from crm_hub.core.sync.model import DuplicatePolicy, SyncAction, SyncItem
from crm_hub.core.sync.writer import ContactWriter
from crm_hub.providers import ContactUpdate, TokenSet
from tests.support.memory_crm import MemoryCrm

TOKENS = TokenSet(access_token="access")


async def test_an_update_names_the_email_the_contact_was_matched_by_even_when_the_mapping_sends_no_email() -> None:
    crm = MemoryCrm()
    crm.contacts["7"] = {"email": "ada@example.com", "firstname": "A."}
    item = SyncItem(key="lead-1", payload={"firstname": "Ada"}, email="ada@example.com")

    [outcome] = await ContactWriter().apply_batch(crm, TOKENS, [item], DuplicatePolicy.UPDATE, dry_run=False)

    assert (outcome.action, outcome.contact_id) == (SyncAction.UPDATED, "7")
    assert crm.updates == [ContactUpdate(contact_id="7", properties={"firstname": "Ada"}, email="ada@example.com")]
