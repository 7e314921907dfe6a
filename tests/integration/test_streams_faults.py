"""Streams under faults (issue 12): kill -9 of the silo that delivers a stream, mid-flow,
loses nothing (at-least-once, in order, duplicates only around the crash, so a handler that
drops tokens it has seen ends with exactly the published sequence); subscriptions survive a
full restart of the cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from grainery.client import GrainClient
from grainery.silo.streams.delivery import DELIVERY_BATCH
from grainery.silo.streams.names import StreamId, StreamKeys
from grainery.silo.streams.store import StreamStore
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import running_cluster, stop_all
from tests.integration.stream_helpers import GRAINS, deduped, received, unique, wait_received

# A shorter membership lease than the default (4 s): the crash is noticed sooner.
TIMING = ["--heartbeat-interval", "0.5", "--lease-duration", "3"]
EVENTS = 600
KILL_AFTER = 100  # delivered to the explicit subscriber before the kill


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with running_cluster(TestCluster(store, GRAINS, size=2, env=env, extra_args=TIMING)) as c:
        yield c


async def pumping_silo(redis: aioredis.Redis, cluster: TestCluster,
                       stream: StreamId) -> SiloProcess:
    """The silo holding the lease of the stream's partition (its incarnation is
    ``<silo id>:<random>``)."""
    keys = StreamKeys(cluster.cluster)

    async def holder() -> bytes:
        value: bytes = await redis.get(keys.lease(keys.partition(stream)))
        return value

    incarnation = await eventually(holder, 20, f"a silo holding {stream}'s partition")
    name = incarnation.decode().split(":")[0]
    return next(s for s in cluster.silos if s.name == name)


async def test_kill_9_of_the_delivering_silo_mid_flow_loses_nothing(
    cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    await cluster.wait_for_stable_membership(2)
    key, follower = unique("crash"), unique("f")
    stream = StreamId("orders", key)
    victim = await pumping_silo(redis, cluster, stream)
    survivor = next(s for s in cluster.silos if s is not victim)
    # Publish through the survivor only, so publishing never fails while the victim dies.
    async with GrainClient(survivor.address, gateway_only=True) as client, \
            GrainClient(survivor.address, victim.address, gateway_only=True) as watcher:
        assert await client.get_grain("SlowFollower", follower).follow("orders", key)
        published: list[str] = []
        first = await client.get_stream("orders", key).publish({"n": "start"})
        watched: list[tuple[str, object]] = []

        async def watch() -> None:
            # The watcher's first silo is the victim (seeds are taken in turn, the second
            # first): its subscription breaks with the crash and resumes on the survivor.
            async for token, event in watcher.get_stream("orders", key).subscribe(first):
                watched.append((token, event))
                if len(watched) == EVENTS:
                    return

        watching = asyncio.create_task(watch())

        async def publish() -> None:
            for n in range(EVENTS):
                published.append(await client.get_stream("orders", key).publish({"n": n}))

        publishing = asyncio.create_task(publish())

        async def flowing() -> bool:
            got = await received(redis, f"SlowFollower/{follower}", "orders", key)
            return len(got) >= KILL_AFTER

        await eventually(flowing, 20, f"{KILL_AFTER} deliveries before the kill")
        victim.kill()
        await asyncio.wait_for(publishing, 60)
        assert len(published) == EVENTS
        await asyncio.wait_for(watching, 60)
    expected = [(token, {"n": n}) for n, token in enumerate(published)]
    assert watched == expected  # the client's subscription: no gap, no duplicate
    for subscriber in (f"OrderWatcher/{key}", f"SlowFollower/{follower}"):
        got = await wait_received(redis, subscriber, "orders", key, published, timeout=60)
        got = [(token, event) for token, event in got if token != first]
        assert deduped(got) == expected, f"{subscriber}: out of order or missing events"
        duplicates = len(got) - len(expected)
        # The position is stored (in the background) after each delivery of up to
        # DELIVERY_BATCH events: at most the delivery in flight at the crash and the one
        # before it (its position write in flight) are made again.
        assert duplicates <= 2 * DELIVERY_BATCH, f"{subscriber}: {duplicates} duplicates"
    cluster.restart_silo(victim)


async def test_subscriptions_survive_a_full_restart_of_the_cluster(
    cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    await cluster.wait_for_stable_membership(2)
    key, follower = unique("restart"), unique("f")
    async with cluster.client() as client:
        assert await client.get_grain("Follower", follower).follow("orders", key)
        before = [await client.get_stream("orders", key).publish({"n": n}) for n in range(3)]
    await wait_received(redis, f"Follower/{follower}", "orders", key, before)
    stream = StreamId("orders", key)
    async with cluster.client() as watcher:
        watched: list[str] = []

        async def watch() -> None:
            # From "now", open across the restart, before any event reached it: each silo
            # ends it as it stops (UNAVAILABLE); the client resumes from where the silo said
            # it started, so what is published meanwhile is not lost.
            async for token, _ in watcher.get_stream("orders", key).subscribe():
                watched.append(token)
                if len(watched) == 4:
                    return

        watching = asyncio.create_task(watch())

        async def subscribed() -> bool:
            samples = [await asyncio.to_thread(s.scrape) for s in cluster.silos]
            return sum(s.get("grainery_stream_client_subscriptions", 0.0) for s in samples) == 1

        await eventually(subscribed, 10, "the watcher's subscription open on a silo")
        await asyncio.to_thread(stop_all, cluster.silos)
        # While every silo is down, an event lands in the store (as a silo would append it).
        connection = aioredis.Redis.from_url(cluster.store.url)
        down = await StreamStore(connection, StreamKeys(cluster.cluster), 1000).publish(
            stream, '{"n": "down"}')
        await connection.aclose()
        for silo in cluster.silos:
            silo.launch()
        for silo in cluster.silos:
            await asyncio.to_thread(silo.wait_serving, 20)
        await cluster.wait_for_stable_membership(2)
        async with cluster.client() as client:
            after = [await client.get_stream("orders", key).publish({"n": n})
                     for n in range(3, 6)]
        await asyncio.wait_for(watching, 60)
    assert watched == [down, *after]
    tokens = [*before, down, *after]
    events = [{"n": n} for n in range(3)] + [{"n": "down"}] + [{"n": n} for n in range(3, 6)]
    for subscriber in (f"OrderWatcher/{key}", f"Follower/{follower}"):
        got = await wait_received(redis, subscriber, "orders", key, tokens)
        assert deduped(got) == list(zip(tokens, events, strict=True))
