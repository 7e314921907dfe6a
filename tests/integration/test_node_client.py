"""The gRPC interface proven from another language: a Node.js client against a real silo.

tests/node/client_test.mjs uses @grpc/grpc-js and @grpc/proto-loader (pinned in
tests/node/package.json; `make node-deps` installs them) and loads
protos/grainery/v1/grainery.proto as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from grainery.silo.testing import TestCluster, TestStore
from tests.integration.helpers import GRAINS, running_cluster

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"
SCRIPT = NODE_DIR / "client_test.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary; checked before any silo starts."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js client test needs Node.js >= 18")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("tests/node/node_modules is missing: run `make node-deps` (npm install)")
    return node


@pytest.fixture(scope="module")
def silo(store: TestStore) -> Iterator[TestCluster]:
    grains = [*GRAINS, "tests.grains.pipeline_context"]  # Hop echoes the call context
    with running_cluster(TestCluster(store, grains, size=1)) as cluster:
        yield cluster


def test_node_client_against_live_silo(node: str, silo: TestCluster) -> None:
    env = {**os.environ, "GRAINERY_TARGET": silo.addresses[0]}
    result = subprocess.run(  # noqa: S603
        [node, "--test", "--test-reporter=tap", str(SCRIPT)],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=90,
    )
    output = result.stdout + result.stderr
    log = silo.silos[0].log_tail()
    assert result.returncode == 0, f"node client failed:\n{output}\nsilo log:\n{log}"
    assert "# fail 0" in output and "# pass 0" not in output, output
