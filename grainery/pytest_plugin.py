"""Pytest fixtures for testing your own grains, registered as the ``grainery`` pytest plugin.

Installing grainery makes them available in every project (entry point ``pytest11``):

- ``grainery_store``: one throwaway Redis-protocol server for the whole test session.
- ``grainery_cluster``: a factory; ``grainery_cluster(["mygrains"], size=2)`` starts real
  ``grainery silo`` processes for your grain modules on that store, under a fresh cluster
  name, waits until their membership is stable and stops them when the test ends.

Imports of the runtime happen inside the fixtures, so merely having the plugin installed
costs other projects' test runs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from grainery.silo.testing import TestCluster, TestStore

ClusterFactory = Callable[..., "TestCluster"]


@pytest.fixture(scope="session")
def grainery_store() -> Iterator[TestStore]:
    """One throwaway Redis-protocol server (valkey) shared by the session's clusters."""
    from grainery.silo.testing import TestStore

    with TestStore() as store:
        yield store


@pytest.fixture
def grainery_cluster(grainery_store: TestStore) -> Iterator[ClusterFactory]:
    """``grainery_cluster(grains, size=1, **TestCluster options)`` -> a started TestCluster,
    stopped when the test ends. A factory, so one test can start clusters of any shape."""
    from grainery.silo.testing import TestCluster

    started: list[TestCluster] = []

    def start(grains: Sequence[str], size: int = 1, **options: Any) -> TestCluster:
        cluster = TestCluster(grainery_store, grains, size=size, **options)
        started.append(cluster)
        cluster.start()
        cluster.wait_stable(size)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
