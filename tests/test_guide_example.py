"""The plugin guide's ToyCRM plugin (docs/plugins.md) is a working package: extracted, its tests and the kit pass.

The convention: the guide marks each file of the example project with a level-3 heading that is nothing but the
file's path in backticks (``### `src/crm_hub_toycrm/provider.py` ``), and the first fenced block after that
heading is the whole file. A draft that a later section replaces (the five-minute skeleton) gets a heading that
says more, ``### A minimal provider: `src/crm_hub_toycrm/provider.py` ``, so it is never taken for the file.

The tests write every marked file into a fresh project, put a ``*.dist-info`` beside the package, as pip would
(``importlib.metadata`` then finds its ``crm_hub`` entry point, so the guide's sandbox test loads the plugin by
its distribution name), and run the project's own tests, the conformance kit among them, with pytest in a
subprocess whose ``PYTHONPATH`` is the project's ``src``. Nothing is installed into this environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

from crm_hub.testing import ProviderConformance

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
#: A heading that is only a file's path: the complete file follows.
MARKED = re.compile(r"^### `(?P<path>[\w./-]+\.(?:py|toml))`$")
#: A heading that names a draft of a file: ``### A minimal provider: `src/crm_hub_toycrm/provider.py` ``.
DRAFT = re.compile(r"^### [^`]+: `(?P<path>[\w./-]+\.(?:py|toml))`$")
#: The files a third party types in to get the guide's whole plugin, tests included.
PROJECT_FILES = {
    "pyproject.toml",
    "src/crm_hub_toycrm/__init__.py",
    "src/crm_hub_toycrm/errors.py",
    "src/crm_hub_toycrm/fake.py",
    "src/crm_hub_toycrm/plugin.py",
    "src/crm_hub_toycrm/provider.py",
    "src/crm_hub_toycrm/sandbox.py",
    "src/crm_hub_toycrm/settings.py",
    "tests/test_toycrm_conformance.py",
    "tests/test_toycrm_end_to_end.py",
    "tests/test_toycrm_errors.py",
    "tests/test_toycrm_retries.py",
    "tests/test_toycrm_sandbox.py",
    "tests/test_toycrm_socket.py",
}
#: The adapter itself, without its fake and plugin glue: what the toolkit is meant to keep small.
ADAPTER_FILES = ("src/crm_hub_toycrm/provider.py", "src/crm_hub_toycrm/errors.py", "src/crm_hub_toycrm/settings.py")
#: Issue 11: at most this many lines together, as ``wc -l`` counts them (blank lines, comments, docstrings too).
ADAPTER_LINES = 200
KIT_TESTS = sorted(name for name in dir(ProviderConformance) if name.startswith("test_"))


def files_under(guide: str, heading: re.Pattern[str]) -> dict[str, list[str]]:
    """Every file under a heading ``heading`` matches: its path and the text of each block so marked."""
    files: dict[str, list[str]] = {}
    lines = guide.splitlines(keepends=True)
    for index, line in enumerate(lines):
        match = heading.match(line.rstrip("\n"))
        if match is None:
            continue
        opening = next(i for i in range(index + 1, len(lines)) if lines[i].startswith(("```", "#")))
        assert lines[opening].startswith("```"), f"no code block follows the heading {line.strip()!r}"
        closing = lines.index("```\n", opening + 1)
        files.setdefault(match["path"], []).append("".join(lines[opening + 1 : closing]))
    return files


def write_project(root: Path, files: Mapping[str, str]) -> None:
    """The files, and what pip would leave beside the package: its name, version and entry points."""
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    dist_info = root / "src" / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    (dist_info / "METADATA").write_text(metadata, encoding="utf-8")
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in project.get("entry-points", {}).items()
    )
    (dist_info / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def run_python(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """This interpreter in ``root``, with the project's ``src`` importable and no plugin allowlist inherited."""
    environment = {key: value for key, value in os.environ.items() if key != "CRM_HUB_PLUGINS"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")]))
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(  # noqa: S603 - this interpreter, arguments of our own
        [sys.executable, *arguments], cwd=root, env=environment, capture_output=True, text=True, timeout=600
    )


@dataclass(frozen=True)
class PytestRun:
    """The outcome of running the extracted project's tests."""

    returncode: int
    output: str
    #: ``tests/test_toycrm_socket.py::test_…`` (class and parameters included) → passed, failed, error or skipped.
    outcomes: dict[str, str]


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def marked(guide: str) -> dict[str, list[str]]:
    return files_under(guide, MARKED)


@pytest.fixture(scope="module")
def project_run(marked: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory) -> PytestRun:
    root = tmp_path_factory.mktemp("crm-hub-toycrm")
    write_project(root, {path: texts[-1] for path, texts in marked.items()})
    report = root / "report.xml"
    completed = run_python(root, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={report}")
    modules = {path.removesuffix(".py").replace("/", "."): path for path in PROJECT_FILES if path.startswith("tests/")}
    outcomes: dict[str, str] = {}
    if report.exists():
        for case in ElementTree.parse(report).iter("testcase"):  # noqa: S314 - the report pytest just wrote
            # JUnit names a test by "tests.test_toycrm_x.TestClass" and "test_name[parameters]".
            classname = case.get("classname", "")
            module = next((m for m in modules if classname == m or classname.startswith(f"{m}.")), classname)
            parts = [modules.get(module, module), *filter(None, [classname[len(module) + 1 :]]), case.get("name", "")]
            outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
            outcomes["::".join(parts)] = outcome
    return PytestRun(completed.returncode, completed.stdout + completed.stderr, outcomes)


def test_the_guide_marks_every_file_of_the_toycrm_project_exactly_once(marked: dict[str, list[str]]) -> None:
    assert sorted(path for path, texts in marked.items() if len(texts) > 1) == [], "marked twice"
    assert sorted(PROJECT_FILES - set(marked)) == [], "files of the project the guide does not mark"
    assert sorted(set(marked) - PROJECT_FILES) == [], "marked files this test does not know: add them above"


def test_the_guides_toycrm_provider_passes_every_test_of_the_conformance_kit(project_run: PytestRun) -> None:
    kit = {name: outcome for name, outcome in project_run.outcomes.items() if "::TestToyCrmConformance::" in name}
    ran = {name.rsplit("::", 1)[1].split("[")[0] for name in kit}

    assert ran == set(KIT_TESTS), project_run.output
    assert [name for name, outcome in kit.items() if outcome != "passed"] == [], project_run.output


def test_the_guides_own_tests_of_the_toycrm_plugin_all_pass(project_run: PytestRun) -> None:
    test_files = sorted(path for path in PROJECT_FILES if path.startswith("tests/"))
    files_run = sorted({name.split("::", 1)[0] for name in project_run.outcomes})

    assert (project_run.returncode, files_run) == (0, test_files), project_run.output
    assert [name for name, outcome in project_run.outcomes.items() if outcome != "passed"] == [], project_run.output


def test_the_guides_provider_errors_and_settings_hold_at_most_200_lines_as_wc_counts_them(
    marked: dict[str, list[str]], tmp_path: Path
) -> None:
    write_project(tmp_path, {path: texts[-1] for path, texts in marked.items()})
    # wc -l counts newline characters: every line of a file that ends with one.
    counts = {path: (tmp_path / path).read_bytes().count(b"\n") for path in ADAPTER_FILES}

    assert sum(counts.values()) <= ADAPTER_LINES, counts


def test_the_five_minute_skeleton_registers_a_provider_that_says_it_is_not_implemented(
    guide: str, marked: dict[str, list[str]], tmp_path: Path
) -> None:
    drafts = {path: texts[0] for path, texts in files_under(guide, DRAFT).items()}
    write_project(
        tmp_path,
        {
            "pyproject.toml": marked["pyproject.toml"][-1],
            "src/crm_hub_toycrm/__init__.py": marked["src/crm_hub_toycrm/__init__.py"][-1],
            "src/crm_hub_toycrm/provider.py": drafts["src/crm_hub_toycrm/provider.py"],
            "src/crm_hub_toycrm/plugin.py": drafts["src/crm_hub_toycrm/plugin.py"],
        },
    )
    script = (
        "from crm_hub.plugins import PluginHost\n"
        "host = PluginHost(allowlist=['crm-hub-toycrm'], load_default_plugins=False, config={})\n"
        "print(host.providers().get('toycrm').configuration_problem())\n"
    )
    completed = run_python(tmp_path, "-c", script)

    assert completed.stdout == "ToyCRM is installed but not implemented yet.\n", completed.stderr
