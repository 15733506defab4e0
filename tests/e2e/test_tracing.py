"""With tracing on, a sync is one connected trace — RPC, core use case, CRM request, its HTTP call, the database
statements — and a job's batch is one too; no span carries a token, an email or a payload. The spans come from a
child process (``tests/e2e/traced_sync.py``) with an in-memory exporter: the tracer provider is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def traced(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run(  # noqa: S603  # our own interpreter and module
        [sys.executable, "-m", "tests.e2e.traced_sync", database_url, str(tmp_path_factory.mktemp("traced"))],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def by_name(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    named: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        named.setdefault(span["name"], []).append(span)
    return named


def test_a_sync_is_one_trace_from_the_rpc_through_the_core_to_the_crm_and_the_database(
    traced: dict[str, Any],
) -> None:
    spans = traced["sync"]
    assert len({span["trace_id"] for span in spans}) == 1, sorted({span["name"] for span in spans})
    named = by_name(spans)
    (rpc,) = named["/crm_hub.v1.SyncService/SyncLead"]
    assert rpc["parent_id"] is None
    (use_case,) = named["sync lead"]
    assert use_case["parent_id"] == rpc["span_id"]
    assert use_case["attributes"]["crm_hub.provider"] == "hubspot"
    crm_calls = [span for name, found in named.items() if name.startswith("crm ") for span in found]
    assert {span["attributes"]["crm.operation"] for span in crm_calls} >= {"upsert"}
    assert all(span["attributes"]["crm.provider"] == "hubspot" for span in crm_calls)
    assert all(span["attributes"]["crm.outcome"] == "ok" for span in crm_calls)
    # Each CRM request's HTTP call is its child (the httpx instrumentation), the URL cut to the CRM's origin.
    crm_ids = {span["span_id"] for span in crm_calls}
    http = [span for span in spans if span["parent_id"] in crm_ids]
    assert len(http) == len(crm_calls)
    assert all(
        span["attributes"].get("url.full", span["attributes"].get("http.url", "")).count("/") == 2 for span in http
    )
    statements = [span for span in spans if "db.system" in span["attributes"] or "db.system.name" in span["attributes"]]
    assert len(statements) >= 3


def test_no_span_carries_a_token_an_email_or_a_payload(traced: dict[str, Any]) -> None:
    everything = json.dumps([traced["sync"], traced["job"]])
    assert "example.com" not in everything
    assert "Tracy" not in everything
    assert "Bearer" not in everything
    assert traced["tokens"]
    assert [token for token in traced["tokens"] if token in everything] == []


def test_the_timeline_entry_carries_the_trace_id_as_its_request_id(traced: dict[str, Any]) -> None:
    (trace_id,) = {span["trace_id"] for span in traced["sync"]}
    assert trace_id in traced["timeline_request_ids"]


def test_each_job_batch_is_a_trace_of_its_own_with_its_crm_requests_inside(traced: dict[str, Any]) -> None:
    spans = traced["job"]
    batches = by_name(spans)["sync job batch"]
    assert all(batch["parent_id"] is None for batch in batches)  # not inside the RPC that started the job
    crm_calls = [span for span in spans if span["name"].startswith("crm ")]
    assert crm_calls
    batch_traces = {batch["trace_id"] for batch in batches}
    assert {span["trace_id"] for span in crm_calls} <= batch_traces
    working = [span for span in spans if span["trace_id"] in {call["trace_id"] for call in crm_calls}]
    assert {"sync job batch", "sync batch", "crm upsert"} <= {span["name"] for span in working}
