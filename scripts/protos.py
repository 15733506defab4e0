"""Generate the Python code for proto/ into src/crm_hub/v1, or check that the committed code is current.

    python scripts/protos.py generate     # rewrite src/crm_hub/v1
    python scripts/protos.py check        # exit 1 if regenerating would change anything
    python scripts/protos.py third-party  # copy the google/api + google/rpc protos buf needs into build/

The google/api and google/rpc .proto files come from the installed googleapis-common-protos wheel, so
nothing of theirs is committed here.
"""

from __future__ import annotations

import difflib
import filecmp
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("crm_hub") / "v1"
OUTPUT_ROOT = ROOT / "src"
THIRD_PARTY = ROOT / "build" / "third_party"
THIRD_PARTY_FILES = [
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/field_behavior.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
]
INIT_TEXT = '"""Generated from proto/crm_hub/v1 by scripts/protos.py. Do not edit."""\n'


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _grpc_tools_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).parent / "_proto"


def generate(output_root: Path) -> None:
    """Run protoc (from grpcio-tools) with the python, grpc and mypy plugins into output_root."""
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    target = output_root / PACKAGE_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{_site_packages()}",
        f"-I{_grpc_tools_include()}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={output_root}",
        f"--grpc_python_out={output_root}",
        f"--mypy_out=quiet:{output_root}",
        f"--mypy_grpc_out=quiet:{output_root}",
        *sources,
    ]
    subprocess.run(command, check=True, cwd=PROTO_ROOT)  # noqa: S603 - fixed argv
    (target / "__init__.py").write_text(INIT_TEXT)
    (target / "py.typed").write_text("")


def check() -> int:
    """Regenerate into a temporary directory and compare with the committed files."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        fresh, committed = fresh_root / PACKAGE_DIR, OUTPUT_ROOT / PACKAGE_DIR
        fresh_names = {p.name for p in fresh.iterdir()}
        committed_names = (
            {p.name for p in committed.iterdir() if p.name != "__pycache__"} if committed.exists() else set()
        )
        problems = [f"missing: {n}" for n in sorted(fresh_names - committed_names)]
        problems += [f"not generated (remove it): {n}" for n in sorted(committed_names - fresh_names)]
        for name in sorted(fresh_names & committed_names):
            if not filecmp.cmp(fresh / name, committed / name, shallow=False):
                diff = difflib.unified_diff(
                    (committed / name).read_text().splitlines(),
                    (fresh / name).read_text().splitlines(),
                    f"committed/{name}",
                    f"regenerated/{name}",
                    lineterm="",
                    n=1,
                )
                problems.append("\n".join(list(diff)[:20]))
    if problems:
        print("Generated code in src/crm_hub/v1 is stale; run `make generate` and commit:", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        return 1
    print("generated code is current")
    return 0


def copy_third_party() -> None:
    for relative in THIRD_PARTY_FILES:
        destination = THIRD_PARTY / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_site_packages() / relative, destination)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "generate"
    if command == "generate":
        generate(OUTPUT_ROOT)
        return 0
    if command == "check":
        return check()
    if command == "third-party":
        copy_third_party()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
