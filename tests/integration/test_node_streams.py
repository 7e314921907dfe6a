"""Streams from another language: a Node.js client subscribes over gRPC to what a grain
publishes, and resumes from its last token after disconnecting (tests/node/streams_test.mjs;
skipped, like tests/integration/test_node_client.py, without node or `make node-deps`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grainery.silo.testing import TestCluster, TestStore
from tests.integration.helpers import running_cluster
from tests.integration.node_tests import node_or_skip, run_node_tests
from tests.integration.stream_helpers import GRAINS


@pytest.fixture(scope="module")
def node() -> str:
    return node_or_skip("the Node.js streams test")


@pytest.fixture(scope="module")
def silo(store: TestStore, node: str) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with running_cluster(TestCluster(store, GRAINS, size=1, env=env)) as cluster:
        yield cluster


def test_node_client_subscribes_and_resumes(node: str, silo: TestCluster) -> None:
    result = run_node_tests(node, "streams_test.mjs", silo.addresses[0])
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node streams test failed:\n{output}\n" \
                                   f"silo log:\n{silo.silos[0].log_tail()}"
    assert "# fail 0" in output and "# pass 2" in output, output
