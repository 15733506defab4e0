"""A fake Salesforce for tests: a Starlette app reproducing Salesforce's OAuth and REST API for Contacts.

    fake = FakeSalesforce(client_id=..., client_secret=..., redirect_uri=...)
    transport = httpx.ASGITransport(fake.app)             # in-process
    async with serving(fake) as base_url: ...             # on 127.0.0.1, a free port (uvicorn)
    python -m crm_hub_salesforce.fake --port 8766          # as a process

Needs the ``fake`` extra: ``pip install 'crm-hub-salesforce[fake]'``.
"""

from __future__ import annotations

from crm_hub_salesforce.fake.app import DEFAULT_INSTANCE_URL, Call, FakeSalesforce
from crm_hub_salesforce.fake.describe import CONTACT_DESCRIBE, CONTACT_FIELDS, describe_field, picklist
from crm_hub_salesforce.fake.ids import make_id, normalize_id
from crm_hub_salesforce.fake.server import serving
from crm_hub_salesforce.fake.soql import SoqlError
from crm_hub_salesforce.fake.validation import RecordError

__all__ = [
    "CONTACT_DESCRIBE",
    "CONTACT_FIELDS",
    "DEFAULT_INSTANCE_URL",
    "Call",
    "FakeSalesforce",
    "RecordError",
    "SoqlError",
    "describe_field",
    "make_id",
    "normalize_id",
    "picklist",
    "serving",
]
