"""The house rules of ARCHITECTURE.md, checked: layers call only downward, and the core knows no provider."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "crm_hub"
PROVIDER_MODULES = ("crm_hub_hubspot", "crm_hub_salesforce")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules_under(folder: str) -> list[Path]:
    return sorted(path for path in (SOURCE / folder).rglob("*.py"))


def test_importing_every_core_module_loads_no_provider_plugin() -> None:
    script = (
        "import importlib, json, pkgutil, sys\n"
        "import crm_hub\n"
        "for module in pkgutil.walk_packages(crm_hub.__path__, 'crm_hub.'):\n"
        "    if not module.name.endswith('__main__'):\n"
        "        importlib.import_module(module.name)\n"
        "from crm_hub.plugins import PluginHost\n"
        "PluginHost(load_entry_points=False).providers()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)  # noqa: S603
    loaded = json.loads(result.stdout)
    assert "crm_hub.core.sync" in loaded
    assert [name for name in loaded if name.startswith(PROVIDER_MODULES)] == []


def test_no_module_of_crm_hub_imports_a_provider_plugin() -> None:
    offenders = {
        str(path.relative_to(SOURCE)): sorted(name for name in imports_of(path) if name.startswith(PROVIDER_MODULES))
        for path in SOURCE.rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def _code_words(path: Path) -> str:
    """Names and string literals of a module, without comments and docstrings."""
    words = []
    previous = tokenize.INDENT
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        is_docstring = token.type == tokenize.STRING and previous in (tokenize.INDENT, tokenize.NEWLINE, tokenize.NL)
        if token.type == tokenize.NAME or (token.type == tokenize.STRING and not is_docstring):
            words.append(token.string.lower())
        if token.type not in (tokenize.COMMENT, tokenize.NL):
            previous = token.type
    return " ".join(words)


@pytest.mark.parametrize("folder", ["core", "rpc", "storage"])
def test_no_provider_specific_name_or_rule_is_in_the_core(folder: str) -> None:
    offenders = []
    for path in modules_under(folder):
        # An example in a user-facing hint is the one exception worth keeping.
        words = _code_words(path).replace('"name the crm to sync to, e.g. hubspot"', "")
        offenders += [f"{path.name}: {crm}" for crm in ("hubspot", "salesforce") if crm in words]
    assert offenders == []


def test_the_core_knows_no_grpc_or_protobuf() -> None:
    offenders = {
        path.name: sorted(
            n for n in imports_of(path) if n.split(".")[0] in {"grpc", "google"} or n.startswith("crm_hub.v1")
        )
        for path in modules_under("core")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_core_imports_nothing_from_the_layers_above_it() -> None:
    # The caller's identity is the core's own type; the JWT verifier (rpc) produces it, never the other way.
    above = ("crm_hub.rpc", "crm_hub.gateway", "crm_hub.service", "jwt")
    offenders = {
        str(path.relative_to(SOURCE)): sorted(n for n in imports_of(path) if n.startswith(above))
        for path in modules_under("core")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_rpc_layer_has_no_sql_and_no_http() -> None:
    offenders = {
        path.name: sorted(
            n
            for n in imports_of(path)
            if n.split(".")[0] in {"sqlalchemy", "httpx", "psycopg", "aiosqlite"} or n.startswith("crm_hub.storage")
        )
        for path in modules_under("rpc")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_provider_contract_depends_on_nothing_but_errors() -> None:
    internal = {n for n in imports_of(SOURCE / "providers" / "__init__.py") if n.startswith("crm_hub")}
    assert internal == {"crm_hub.errors"}


def test_the_provider_toolkit_depends_only_on_the_contract_and_httpx() -> None:
    found = imports_of(SOURCE / "providers" / "http.py")
    internal = {n for n in found if n.startswith("crm_hub")}
    assert internal == {"crm_hub.errors", "crm_hub.providers"}
    assert {n.split(".")[0] for n in found if not n.startswith("crm_hub")} - set(sys.stdlib_module_names) == {"httpx"}


def test_a_fake_crm_imports_without_pytest() -> None:
    # Fakes run outside tests too (crm-hub up --sandbox): their toolkit must not need pytest.
    script = "import json, sys\nimport crm_hub.testing.fakes\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)  # noqa: S603
    loaded = json.loads(result.stdout)
    assert "crm_hub.testing.fakes" in loaded
    assert [name for name in loaded if name.split(".")[0] in {"pytest", "_pytest", "pytest_asyncio"}] == []


def test_the_package_root_holds_the_public_api_and_the_ground_and_each_layer_has_its_folder() -> None:
    modules = {path.stem for path in SOURCE.glob("*.py")} - {"__init__", "__main__"}
    folders = {path.name for path in SOURCE.iterdir() if path.is_dir() and not path.name.startswith("__")}
    # The public API of plugin authors, and the ground every layer may use (errors, settings helpers).
    assert modules == {"errors", "hookspecs", "notifications", "plugins", "sandbox", "settings"}
    assert folders == {
        "providers",  # the provider contract and the adapter toolkit (public)
        "testing",  # the conformance kit and pytest plugin (public)
        "default_plugins",
        "observability",
        "storage",
        "core",
        "queue",
        "rpc",
        "gateway",
        "service",
        "v1",
    }


def test_only_the_service_and_the_testing_kit_import_the_service_layer() -> None:
    offenders = {
        str(path.relative_to(SOURCE)): sorted(n for n in imports_of(path) if n.startswith("crm_hub.service"))
        for path in SOURCE.rglob("*.py")
        if path.relative_to(SOURCE).parts[0] not in ("service", "testing", "__main__.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_gateway_imports_neither_the_rpc_layer_nor_the_service() -> None:
    # crm-hub up (the gRPC server and Envoy together) is the service's: the gateway only runs Envoy.
    offenders = {
        str(path.relative_to(SOURCE)): sorted(
            n for n in imports_of(path) if n.startswith(("crm_hub.rpc", "crm_hub.service"))
        )
        for path in modules_under("gateway")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_ground_imports_no_layer() -> None:
    layers = ("crm_hub.core", "crm_hub.storage", "crm_hub.rpc", "crm_hub.gateway", "crm_hub.service", "crm_hub.queue")
    ground = [SOURCE / "errors.py", SOURCE / "settings.py", *modules_under("observability")]
    offenders = {
        str(path.relative_to(SOURCE)): sorted(n for n in imports_of(path) if n.startswith(layers)) for path in ground
    }
    assert {name: found for name, found in offenders.items() if found} == {}
