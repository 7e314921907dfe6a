"""Grain timers through a real silo: a timer ticks while the grain is active and stops once
it deactivates (asked to, or collected as idle although its timer kept ticking). Each tick
is an INCR in Redis (tests/grains/timer_probes.py), outside the grain's fenced state, so
even a stray tick would show. "Stopped" is proved against a witness grain whose timer keeps
ticking: once it ticked several more times, the stopped grain's count has not moved. In
process: tests/unit/test_timers.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from grainery.client import GrainClient
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.grains.timer_probes import record
from tests.integration.helpers import live_client, unique

GRAINS = ["tests.grains.timer_probes"]


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with TestCluster(store, GRAINS, size=1, env=env) as running:
        yield running


@pytest.fixture
async def client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    async with live_client(cluster) as connected:
        yield connected


async def count(redis: aioredis.Redis, key: str, what: str = "ticks") -> int:
    return int(await redis.get(record(key, what)) or 0)


async def ticks_at_least(redis: aioredis.Redis, key: str, at_least: int) -> None:
    async def check() -> bool:
        return await count(redis, key) >= at_least

    await eventually(check, 20, f"{at_least} ticks of {key}")


async def stopped(redis: aioredis.Redis, key: str, reason: str) -> int:
    """Wait for ``key``'s on_deactivate (watched in Redis: a call would be activity)."""
    async def check() -> bool:
        return await redis.get(record(key, "reason")) == reason.encode()

    await eventually(check, 20, f"{key} deactivated ({reason})")
    return await count(redis, key, "stopped")


async def test_a_timer_ticks_while_active_and_stops_when_the_grain_leaves(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis
) -> None:
    key, witness = unique("timer"), unique("witness")
    await client.get_grain("TimerProbe", witness).start(0.05)
    await client.get_grain("TimerProbe", key).start(0.05)
    await ticks_at_least(redis, key, 3)
    await client.get_grain("TimerProbe", key).leave()
    at_stop = await stopped(redis, key, "requested")
    await ticks_at_least(redis, witness, await count(redis, witness) + 5)
    assert await count(redis, key) == at_stop >= 3
    assert cluster.silos[0].scrape().get(
        'grainery_timer_ticks_total{grain_type="TimerProbe",outcome="ok"}', 0
    ) >= 3


async def test_ticks_do_not_keep_a_grain_from_being_collected_as_idle(
    client: GrainClient, redis: aioredis.Redis
) -> None:
    key, witness = unique("idle"), unique("witness")
    await client.get_grain("TimerProbe", witness).start(0.05)
    await client.get_grain("IdleTimerProbe", key).start(0.05)
    at_stop = await stopped(redis, key, "idle")  # collected while its timer was ticking
    assert at_stop >= 1
    await ticks_at_least(redis, witness, await count(redis, witness) + 5)
    assert await count(redis, key) == at_stop
