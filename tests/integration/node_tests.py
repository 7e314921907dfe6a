"""Running the Node.js gRPC clients in tests/node against a real silo (the proof that the
.proto files serve another language). One place decides when they are skipped (no node,
or `make node-deps` not run) and how they are run (`node --test`, TAP output)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parents[2] / "tests" / "node"


def node_or_skip(what: str) -> str:
    """The node binary, or skip ``what`` (a test that needs Node.js >= 18 and the packages
    ``make node-deps`` installs)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is not installed: {what} needs Node.js >= 18")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("tests/node/node_modules is missing: run `make node-deps` (npm install)")
    return node


def run_node_tests(
    node: str, script: str, target: str, env: dict[str, str] | None = None,
    name_pattern: str | None = None, timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """``node --test`` of ``tests/node/<script>`` against the silo at ``target``
    (GRAINERY_TARGET), with TAP output; stdout and stderr captured as text."""
    pattern = [f"--test-name-pattern={name_pattern}"] if name_pattern else []
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [node, "--test", "--test-reporter=tap", *pattern, script],
        cwd=NODE_DIR, env={**os.environ, "GRAINERY_TARGET": target, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )
