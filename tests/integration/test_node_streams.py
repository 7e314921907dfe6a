"""Streams from another language: a Node.js client subscribes over gRPC to what a grain
publishes, and resumes from its last token after disconnecting (tests/node/streams_test.mjs;
skipped, like tests/integration/test_node_client.py, without node or `make node-deps`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from grainery.silo.testing import TestCluster, TestStore
from tests.integration.helpers import running_cluster
from tests.integration.stream_helpers import GRAINS

NODE_DIR = Path(__file__).resolve().parents[2] / "tests" / "node"
SCRIPT = NODE_DIR / "streams_test.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js streams test needs Node.js >= 18")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("tests/node/node_modules is missing: run `make node-deps` (npm install)")
    return node


@pytest.fixture(scope="module")
def silo(store: TestStore, node: str) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with running_cluster(TestCluster(store, GRAINS, size=1, env=env)) as cluster:
        yield cluster


def test_node_client_subscribes_and_resumes(node: str, silo: TestCluster) -> None:
    env = {**os.environ, "GRAINERY_TARGET": silo.addresses[0]}
    result = subprocess.run(  # noqa: S603
        [node, "--test", "--test-reporter=tap", str(SCRIPT)],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=90,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node streams test failed:\n{output}\n" \
                                   f"silo log:\n{silo.silos[0].log_tail()}"
    assert "# fail 0" in output and "# pass 2" in output, output
