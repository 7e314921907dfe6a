"""Shared fixtures: a real Redis-protocol server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grainery.silo.testing import TestStore


@pytest.fixture(scope="session")
def store() -> Iterator[TestStore]:
    server = TestStore().start()
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: the churn soak test (about 2 minutes); select with -m soak"
    )
