"""Shared fixtures: a real Redis-protocol server for the whole session, and a connection to
it for tests that check what grains recorded there."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from grainery.silo.testing import TestStore


@pytest.fixture(scope="session")
def store() -> Iterator[TestStore]:
    server = TestStore().start()
    yield server
    server.stop()


@pytest.fixture
async def redis(store: TestStore) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(store.url)
    yield connection
    await connection.aclose()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: the churn soak test (about 2 minutes); select with -m soak"
    )
