"""The store connection of the probe grains: they record what they saw (ticks, deliveries,
effects) in the test's own valkey, whose URL the tests pass to their silos as
``GRAINERY_TEST_STORE_URL``, so a test can check it from outside the silos."""

from __future__ import annotations

import os

import redis.asyncio as aioredis

_store: aioredis.Redis | None = None


def store() -> aioredis.Redis:
    """One connection pool per silo process; blocking, so hundreds of grains recording at
    once wait for a connection instead of failing with "Too many connections"."""
    global _store
    if _store is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            os.environ["GRAINERY_TEST_STORE_URL"], max_connections=32, timeout=20
        )
        _store = aioredis.Redis(connection_pool=pool)
    return _store
