"""Regenerate the Python protobuf/gRPC code in ``client/_proto`` from ``protos/``.

Why a script: the generated files are committed (users install without
grpcio-tools), so CI must be able to regenerate them byte-for-byte and fail when
the committed copy is stale (``python protos/generate.py --check``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "client" / "_proto"
PACKAGE = "grainery.client._proto"


def _generate(into: Path) -> None:
    from grpc_tools import protoc  # imported here: only needed by developers

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in into.rglob("*.py"):
        text = path.read_text()
        # Generated imports are absolute from the proto root; anchor them in our package.
        text = text.replace("from grainery.v1 import", f"from {PACKAGE}.grainery.v1 import")
        path.write_text(text)
    for directory in [into, *[d for d in into.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in {".py", ".pyi"}
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        _generate(fresh)
        if options.check:
            if _snapshot(fresh) != _snapshot(OUT):
                print("client/_proto is stale: run `make proto` and commit", file=sys.stderr)
                return 1
            print("client/_proto is up to date")
            return 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT)
    print(f"generated {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
