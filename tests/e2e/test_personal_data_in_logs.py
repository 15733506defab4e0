"""No lead value reaches the logs at any level — ours or a library's — unless CRM_HUB_LOG_PERSONAL_DATA asks."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from crm_hub.service.log import configure_logging
from tests.e2e.conftest import World
from tests.e2e.test_hubspot_flow import connected_with_mapping

EMAIL = "personal.data@example.com"
NAME = "Grace-Personal"


@pytest.fixture
def logging_to() -> Iterator[Callable[..., io.StringIO]]:
    """``logging_to(level, personal_data=...)``: crm_hub's own log set-up, writing what it would write to stderr
    into the returned stream. The root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure(level: str, *, personal_data: bool = False) -> io.StringIO:
        stream = io.StringIO()
        with contextlib.redirect_stderr(stream):  # the handler keeps the stream it was given
            configure_logging(level, "json", personal_data=personal_data)
        return stream

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def _sync_a_lead(world: World) -> None:
    await connected_with_mapping(world)
    lead_id = await world.lead(email=EMAIL, name=NAME, company="Acme")
    await world.sync.SyncLead(world.sync_request(lead_id, dry_run=True), metadata=world.auth("member"))
    await world.sync.SyncLead(world.sync_request(lead_id), metadata=world.auth("member"))


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_a_sync_at_debug_level_logs_no_lead_value(hubspot: World, logging_to: Callable[..., io.StringIO]) -> None:
    log_output = logging_to("DEBUG")

    await _sync_a_lead(hubspot)

    records = _records(log_output)
    assert any(record["logger"] == "crm_hub.rpc" for record in records)  # the log is on, and was captured
    text = log_output.getvalue()
    assert EMAIL not in text
    assert NAME not in text
    # Libraries' chatter below WARNING is what carries statements and bodies: none of it gets through.
    assert [
        record["logger"]
        for record in records
        if not str(record["logger"]).startswith("crm_hub") and record["level"] in ("debug", "info")
    ] == []


async def test_personal_data_setting_lets_the_libraries_debug_records_through(
    hubspot: World, logging_to: Callable[..., io.StringIO], database_url: str
) -> None:
    log_output = logging_to("DEBUG", personal_data=True)

    await _sync_a_lead(hubspot)

    libraries = {
        str(record["logger"]) for record in _records(log_output) if not str(record["logger"]).startswith("crm_hub")
    }
    assert libraries  # what the filter held back in the test above
    if database_url.startswith("sqlite"):
        # aiosqlite prints each statement with its parameters: exactly what must stay out by default.
        assert EMAIL in log_output.getvalue()
