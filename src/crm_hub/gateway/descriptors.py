"""The FileDescriptorSet Envoy's gRPC-JSON transcoder reads: proto/crm_hub/v1 plus everything it imports.

    python -m crm_hub.gateway generate   # rewrite src/crm_hub/gateway/crm_hub.binpb (and gateway/openapi.json)
    python -m crm_hub.gateway check      # exit 1 if regenerating would change either

The set is built with grpc_tools.protoc (``--include_imports``), so buf is not needed. google/api and
google/rpc come from the installed googleapis-common-protos wheel, google/protobuf from grpcio-tools.
google/rpc/status.proto and error_details.proto are compiled in explicitly although no crm_hub proto imports
them: without them the transcoder cannot render the ErrorInfo/BadRequest details of an error as JSON.

The result is committed inside the package (``crm_hub.binpb``), so an installed crm_hub runs the gateway
without protoc or the .proto sources; ``check`` keeps it in step with proto/.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2

__all__ = [
    "DESCRIPTOR_SET_NAME",
    "EXTRA_PROTOS",
    "PROTO_ROOT",
    "build_descriptor_set",
    "check",
    "committed_path",
    "descriptor_set_path",
    "generate",
    "load_descriptor_set",
]

DESCRIPTOR_SET_NAME = "crm_hub.binpb"
#: The repository's proto/ directory (present in a checkout, not in an installed wheel).
PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto"
#: Compiled in although nothing imports them, so the transcoder can print rich error details.
EXTRA_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
_COMMITTED = Path(__file__).resolve().parent / DESCRIPTOR_SET_NAME


def descriptor_set_path() -> Path:
    """The committed descriptor set shipped inside the package (what Envoy is given)."""
    return Path(str(resources.files("crm_hub.gateway").joinpath(DESCRIPTOR_SET_NAME)))


def load_descriptor_set(path: Path | None = None) -> descriptor_pb2.FileDescriptorSet:
    """Parse a descriptor set (by default the committed one)."""
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString((path or descriptor_set_path()).read_bytes())
    return files


def _include_paths() -> list[Path]:
    import grpc_tools  # type: ignore[import-untyped]  # a dev dependency: only generating needs it

    # The googleapis-common-protos wheel puts google/api/*.proto and google/rpc/*.proto next to its modules.
    site_packages = Path(sysconfig.get_paths()["purelib"])
    return [PROTO_ROOT, site_packages, Path(grpc_tools.__file__).parent / "_proto"]


def build_descriptor_set(*, include_source_info: bool = False, proto_root: Path = PROTO_ROOT) -> bytes:
    """Compile proto/crm_hub/v1/*.proto and their imports (plus EXTRA_PROTOS) into a serialized FileDescriptorSet.

    ``include_source_info`` keeps the comments (the OpenAPI generator turns them into descriptions); Envoy's
    copy leaves them out.
    """
    sources = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "crm_hub" / "v1").glob("*.proto"))
    if not sources:
        raise FileNotFoundError(f"no .proto files under {proto_root / 'crm_hub' / 'v1'}")
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / DESCRIPTOR_SET_NAME
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *(f"-I{path}" for path in _include_paths()),
            "--include_imports",
            *(["--include_source_info"] if include_source_info else []),
            f"--descriptor_set_out={output}",
            *sources,
            *EXTRA_PROTOS,
        ]
        subprocess.run(command, check=True, cwd=proto_root)  # noqa: S603 - fixed argv
        return output.read_bytes()


def committed_path() -> Path:
    """Where ``generate`` writes (the package directory of a source checkout)."""
    return _COMMITTED


def generate(target: Path = _COMMITTED) -> None:
    """Rewrite the committed descriptor set."""
    target.write_bytes(build_descriptor_set())


def check(target: Path = _COMMITTED) -> list[str]:
    """Problems with the committed descriptor set (empty when it is current)."""
    if not target.exists():
        return [f"missing: {target.name}"]
    fresh = descriptor_pb2.FileDescriptorSet.FromString(build_descriptor_set())
    committed = descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())
    if fresh == committed:
        return []
    fresh_files = {f.name: f for f in fresh.file}
    committed_files = {f.name: f for f in committed.file}
    problems = [f"missing: {name}" for name in sorted(fresh_files.keys() - committed_files.keys())]
    problems += [f"no longer generated: {name}" for name in sorted(committed_files.keys() - fresh_files.keys())]
    problems += [
        f"changed: {name}"
        for name in sorted(fresh_files.keys() & committed_files.keys())
        if fresh_files[name] != committed_files[name]
    ]
    return problems or ["file order changed"]
