"""The plugin guide (docs/plugins.md) keeps up with the plugin contract: every hook, public name and capability.

Cheap checks in the manner of datasette's test_docs.py: a hook, a public name or a capability added to the
code without a word in the guide fails here, naming what is missing.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from crm_hub import hookspecs, providers, testing
from crm_hub.providers import ProviderCapabilities
from crm_hub.providers import http as toolkit

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
#: pluggy marks each hookspec function with ``<project>_spec``.
HOOKSPECS = sorted(
    name for name, value in vars(hookspecs).items() if hasattr(value, f"{hookspecs.hookspec.project_name}_spec")
)
CAPABILITIES = [field.name for field in dataclasses.fields(ProviderCapabilities)]


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def section(guide: str, title: str) -> str:
    """The text under the level-2 heading ``title``, up to the next level-2 heading."""
    _, found, rest = guide.partition(f"\n## {title}\n")
    assert found, f"docs/plugins.md has no section '## {title}'"
    return rest.split("\n## ", 1)[0]


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows whose first cell is inline code, by that code: the other cells, stripped."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_the_hooks_are_read_from_the_hookspecs_module() -> None:
    assert "register_providers" in HOOKSPECS
    assert "hookimpl" not in HOOKSPECS


@pytest.mark.parametrize("name", HOOKSPECS)
def test_every_hookspec_is_documented_with_its_parameters_in_the_plugin_guide(guide: str, name: str) -> None:
    parameters = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"`{name}({parameters})`" in guide, f"docs/plugins.md does not document the hook {name}({parameters})"


@pytest.mark.parametrize("name", providers.__all__)
def test_every_public_name_of_the_provider_contract_appears_in_the_plugin_guide(guide: str, name: str) -> None:
    assert re.search(rf"\b{re.escape(name)}\b", guide), f"docs/plugins.md never mentions crm_hub.providers.{name}"


@pytest.mark.parametrize("name", toolkit.__all__)
def test_every_name_of_the_adapter_toolkit_is_in_the_guides_toolkit_section(guide: str, name: str) -> None:
    toolkit_section = section(guide, "The adapter toolkit: `crm_hub.providers.http`")
    assert re.search(rf"\b{re.escape(name)}\b", toolkit_section), f"the toolkit section never mentions {name}"


@pytest.mark.parametrize("name", testing.__all__)
def test_every_public_name_of_the_testing_kit_appears_in_the_plugin_guide(guide: str, name: str) -> None:
    assert re.search(rf"\b{re.escape(name)}\b", guide), f"docs/plugins.md never mentions crm_hub.testing.{name}"


@pytest.mark.parametrize("name", CAPABILITIES)
def test_every_provider_capability_is_explained_with_its_default_in_the_capabilities_table(
    guide: str, name: str
) -> None:
    rows = table_rows(section(guide, "Capabilities"))
    assert name in rows, f"the Capabilities table of docs/plugins.md has no row for {name}"
    default, meaning, use = rows[name][:3]
    assert default == f"`{getattr(ProviderCapabilities(), name)!r}`", f"the default shown for {name} is wrong"
    assert len(meaning.split()) >= 5, f"docs/plugins.md does not say what {name} means"
    assert len(use.split()) >= 5, f"docs/plugins.md does not say what the core does with {name}"


def test_every_complete_python_file_in_the_plugin_guide_compiles(guide: str) -> None:
    files = [body for body in re.findall(r"```python\n(.*?)```", guide, re.DOTALL) if body.startswith('"""')]
    assert files, "the guide shows complete Python files (a module docstring first)"
    for body in files:
        compile(body, f"docs/plugins.md: {body.splitlines()[0][:60]}", "exec")
