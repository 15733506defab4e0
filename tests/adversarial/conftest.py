"""Fixtures of the adversarial suite: the live sandbox the schema fuzzer hammers.

Envoy and PostgreSQL follow the suite's rule: without them these tests are skipped locally and fail under
``CI=true`` (``envoy_binary`` is the gateway package's fixture; ``database_url`` the root conftest's).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.sandbox import Sandbox, sandbox_process
from tests.gateway.conftest import envoy_binary

__all__ = ["envoy_binary", "live_sandbox", "schemathesis_node_id"]


@pytest.fixture(autouse=True)
def schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's ``from_fixture`` tests read and rename ``item._nodeid``, which pytest 9.2 no longer has
    (it keeps the id in ``item._id``): give the item the attribute it reads. Reports keep pytest's own ids; each
    operation is still reported as its own subtest. Drop this once schemathesis supports pytest 9.2."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def live_sandbox(database_url: str, tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path) -> Iterator[Sandbox]:
    """`crm-hub up --sandbox` over the test database, one team connected to both fake CRMs (see sandbox.py)."""
    with sandbox_process(database_url, tmp_path_factory.mktemp("sandbox")) as sandbox:
        yield sandbox
