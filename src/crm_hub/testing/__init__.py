"""Testing tools for crm_hub provider plugins: a pytest plugin with fixtures and a conformance suite.

A provider package proves it honours the provider contract against its own fake CRM in a few lines::

    from crm_hub.testing import ConformanceHarness, ProviderConformance

    class TestMyCrmConformance(ProviderConformance):
        @pytest.fixture
        def harness(self) -> ConformanceHarness:
            return MyCrmHarness()          # your subclass of ConformanceHarness, wired to your fake

The suite is installed as a pytest plugin (entry point ``pytest11``), so its fixtures are available in every
test session once crm-hub is installed. See docs/plugins.md.
"""

from __future__ import annotations

from crm_hub.testing.conformance import ConformanceHarness, FailureKind, ProviderConformance, follow_consent
from crm_hub.testing.pytest_plugin import CrmHubServer, RunningHub

__all__ = ["ConformanceHarness", "CrmHubServer", "FailureKind", "ProviderConformance", "RunningHub", "follow_consent"]
