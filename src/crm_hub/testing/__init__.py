"""Testing tools for crm_hub provider plugins: a pytest plugin with fixtures and a conformance suite.

A provider package proves it honours the provider contract against its own fake CRM in a few lines::

    from crm_hub.testing import ConformanceHarness, ProviderConformance

    class TestMyCrmConformance(ProviderConformance):
        @pytest.fixture
        def harness(self) -> ConformanceHarness:
            return MyCrmHarness()          # your subclass of ConformanceHarness, wired to your fake

The suite is installed as a pytest plugin (entry point ``pytest11``), so its fixtures are available in every
test session once crm-hub is installed. ``crm_hub.testing.fakes`` is the toolkit for writing the fake itself.
See docs/plugins.md.

The names below load lazily: ``crm_hub.testing.fakes`` (which a fake CRM imports at run time, e.g. under
``crm-hub up --sandbox``) must not drag pytest in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_hub.testing.conformance import ConformanceHarness, FailureKind, ProviderConformance, follow_consent
    from crm_hub.testing.pytest_plugin import CrmHubServer, RunningHub

__all__ = ["ConformanceHarness", "CrmHubServer", "FailureKind", "ProviderConformance", "RunningHub", "follow_consent"]

_HOMES = {
    "ConformanceHarness": "crm_hub.testing.conformance",
    "FailureKind": "crm_hub.testing.conformance",
    "ProviderConformance": "crm_hub.testing.conformance",
    "follow_consent": "crm_hub.testing.conformance",
    "CrmHubServer": "crm_hub.testing.pytest_plugin",
    "RunningHub": "crm_hub.testing.pytest_plugin",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'crm_hub.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
