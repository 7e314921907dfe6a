"""The gRPC interface proven from another language: a Node.js client against a real silo.

tests/node/client_test.mjs uses @grpc/grpc-js and @grpc/proto-loader (pinned in
tests/node/package.json; `make node-deps` installs them) and loads
protos/grainery/v1/grainery.proto as it is.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grainery.silo.testing import TestCluster, TestStore
from tests.integration.helpers import GRAINS, running_cluster
from tests.integration.node_tests import node_or_skip, run_node_tests


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary; checked before any silo starts."""
    return node_or_skip("the Node.js client test")


@pytest.fixture(scope="module")
def silo(store: TestStore) -> Iterator[TestCluster]:
    grains = [*GRAINS, "tests.grains.pipeline_context"]  # Hop echoes the call context
    with running_cluster(TestCluster(store, grains, size=1)) as cluster:
        yield cluster


def test_node_client_against_live_silo(node: str, silo: TestCluster) -> None:
    result = run_node_tests(node, "client_test.mjs", silo.addresses[0])
    output = result.stdout + result.stderr
    log = silo.silos[0].log_tail()
    assert result.returncode == 0, f"node client failed:\n{output}\nsilo log:\n{log}"
    assert "# fail 0" in output and "# pass 0" not in output, output
