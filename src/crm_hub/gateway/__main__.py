"""``python -m crm_hub.gateway generate|check``: the generated gateway files (descriptor set, OpenAPI)."""

from __future__ import annotations

import sys

from crm_hub.gateway import descriptors, openapi


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "generate":
        descriptors.generate()
        openapi.generate()
        print(f"wrote {descriptors.committed_path()} and {openapi.OPENAPI_PATH}")
        return 0
    if command == "check":
        stale = {
            str(descriptors.committed_path()): descriptors.check(),
            str(openapi.OPENAPI_PATH): openapi.check(),
        }
        for path, problems in stale.items():
            if problems:
                print(f"{path} is stale; run `make generate` and commit:", file=sys.stderr)
                print("\n".join(problems), file=sys.stderr)
        if any(stale.values()):
            return 1
        print("generated gateway files are current")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
