"""Package boundaries: the client never imports the silo; public names resolve; protos fresh."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_client_never_imports_silo() -> None:
    code = (
        "import client, client.sync, client.grain_client, client.routing, client.codec, sys; "
        "leaked = sorted(m for m in sys.modules if m == 'silo' or m.startswith('silo.')); "
        "assert not leaked, leaked"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("package", ["client", "silo"])
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert names, f"{package}.__all__ is empty"
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(module, name, None) is not None, f"{package}.{name} does not resolve"


def test_generated_protobuf_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "protos/generate.py", "--check"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
