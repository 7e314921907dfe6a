"""Package boundaries: the client never imports the silo; public names resolve; protos fresh."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_client_never_imports_silo() -> None:
    """The client is the lower layer: no module under client/ imports the silo runtime."""
    offenders = []
    for path in sorted((REPO / "client").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n.startswith(("grainery.silo", "silo"))]
    assert not offenders, offenders


@pytest.mark.parametrize("package", ["grainery", "grainery.client", "grainery.silo"])
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


def test_only_grainery_is_installed_at_the_top_level(tmp_path: Path) -> None:
    """Outside the repository, ``client`` and ``silo`` are the user's names, not ours."""
    code = (
        "import importlib.util, grainery; "
        "assert importlib.util.find_spec('client') is None; "
        "assert importlib.util.find_spec('silo') is None"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_a_users_own_client_module_does_not_shadow_grainery(tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text("MINE = True\n")
    code = "from grainery import GrainClient; import client; assert client.MINE; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
