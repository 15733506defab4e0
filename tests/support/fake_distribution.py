"""Fake installed distributions: a ``*.dist-info`` folder and a plugin module in a directory put on sys.path.

That is all ``importlib.metadata`` needs to see an installed package, so the plugin host loads these through
the ``crm_hub`` entry point group exactly as it loads a pip-installed plugin.
"""

from __future__ import annotations

import re
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: A plugin module registering one StubCrm called ``{provider}``.
PROVIDER_PLUGIN_SOURCE = """
from crm_hub.hookspecs import hookimpl
from tests.support.stub_providers import provider_named


@hookimpl
def register_providers(register):
    register(provider_named({provider!r}))
"""


@dataclass
class FakeSite:
    """A site-packages-like directory; call :meth:`install` for every distribution, then :meth:`activate`."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    modules: list[str] = field(default_factory=list)

    def install(
        self,
        distribution: str,
        *,
        version: str = "1.0.0",
        entry_point: str | None = None,
        provider: str | None = None,
        source: str | None = None,
    ) -> str:
        """Write a distribution whose ``crm_hub`` entry point loads a fresh module; returns the module name.

        The module registers a StubCrm called ``provider`` unless ``source`` gives its whole text.
        """
        module = f"crm_hub_fake_{uuid.uuid4().hex[:12]}"
        body = source if source is not None else PROVIDER_PLUGIN_SOURCE.format(provider=provider or "fakecrm")
        (self.root / f"{module}.py").write_text(textwrap.dedent(body))
        dist_info = self.root / f"{re.sub(r'[-_.]+', '_', distribution)}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        (dist_info / "entry_points.txt").write_text(f"[crm_hub]\n{entry_point or distribution} = {module}\n")
        self.modules.append(module)
        return module

    def activate(self) -> None:
        """Put the directory on sys.path (undone after the test)."""
        self.monkeypatch.syspath_prepend(str(self.root))

    def forget_modules(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)


@contextmanager
def fake_site_in(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    """A :class:`FakeSite` in a fresh ``directory / "site-packages"``; its modules are forgotten on exit."""
    root = directory / "site-packages"
    root.mkdir()
    site = FakeSite(root=root, monkeypatch=monkeypatch)
    try:
        yield site
    finally:
        site.forget_modules()
