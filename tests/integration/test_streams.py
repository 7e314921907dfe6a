"""Streams through real silos (issue 12): order per subscription for an implicit and two
explicit subscribers, a failing hook dead-lettered without blocking the others,
subscriptions that outlive their grain's activation, the client-side Subscribe (Python
async and sync) resuming from a token, the CLI, bad input. Crashes and restarts:
tests/integration/test_streams_faults.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from grainery.client import GrainClient, InvalidArgumentsError
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.streams.names import MAX_EVENT_BYTES, MAX_KEY_CHARS, StreamId, StreamKeys
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import live_client, running_cluster
from tests.integration.stream_helpers import GRAINS, unique, wait_received

ORDER_EVENTS = 10_000  # the size (about 6 s here)


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with running_cluster(TestCluster(store, GRAINS, size=2, env=env,
                                     extra_args=["--stream-attempts", "3"])) as running:
        yield running


@pytest.fixture
async def client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    await cluster.wait_for_stable_membership(2)
    async with live_client(cluster) as connected:
        yield connected


async def publish_numbers(client: GrainClient, namespace: str, key: str, count: int,
                          chunk: int = 500) -> list[str]:
    """Events {"n": 0} .. {"n": count - 1}, published in order by a grain; their tokens."""
    publisher = client.get_grain("Publisher", unique("pub"))
    tokens: list[str] = []
    for start in range(0, count, chunk):
        tokens += await publisher.publish_many(namespace, key, start, min(chunk, count - start),
                                               timeout=60)
    return tokens


async def test_each_subscriber_gets_exactly_the_published_sequence(
    client: GrainClient, redis: aioredis.Redis,
) -> None:
    await check_order(client, redis, ORDER_EVENTS)


async def check_order(client: GrainClient, redis: aioredis.Redis, count: int) -> None:
    """``count`` events on one stream reach the implicit subscriber and two explicit ones,
    each exactly the published sequence (no fault: no duplicate, nothing missing)."""
    key = unique("big")
    followers = [f"Follower/{unique('f')}" for _ in range(2)]
    for follower in followers:
        assert await client.get_grain("Follower", follower.split("/")[1]).follow("orders", key)
    tokens = await publish_numbers(client, "orders", key, count)
    assert tokens == sorted(tokens, key=lambda t: tuple(map(int, t.split("-"))))
    expected = [(token, {"n": n}) for n, token in enumerate(tokens)]
    for subscriber in (f"OrderWatcher/{key}", *followers):
        got = await wait_received(redis, subscriber, "orders", key, tokens, timeout=60)
        assert got == expected, f"{subscriber} got something else than the published sequence"


async def test_a_hook_that_always_raises_is_dead_lettered_and_blocks_no_one(
    client: GrainClient, redis: aioredis.Redis, cluster: TestCluster,
) -> None:
    key, broken, healthy = unique("bad"), unique("broken"), unique("healthy")
    assert await client.get_grain("Broken", broken).follow("alerts", key)
    assert await client.get_grain("Follower", healthy).follow("alerts", key)
    stream = client.get_stream("alerts", key)
    tokens = [await stream.publish({"alert": n}) for n in range(3)]
    got = await wait_received(redis, f"Follower/{healthy}", "alerts", key, tokens)
    assert [token for token, _ in got] == tokens
    dead_key = StreamKeys(cluster.cluster).dead_letters("alerts")

    async def dead_lettered() -> list[dict[bytes, bytes]]:
        letters = [fields for _, fields in await redis.xrange(dead_key)
                   if fields[b"subscriber"] == f"Broken/{broken}".encode()]
        assert len(letters) == 3, letters
        return letters

    letters = await eventually(dead_lettered, 30, "three dead letters for the broken hook")
    assert [letter[b"token"].decode() for letter in letters] == tokens
    assert b"cannot handle" in letters[0][b"error"]
    assert json.loads(letters[0][b"event"]) == {"alert": 0}

    async def counted() -> bool:
        dead = retried = 0.0
        for silo in cluster.silos:
            samples = await asyncio.to_thread(silo.scrape)
            dead += samples.get(
                'grainery_stream_events_dead_lettered_total{namespace="alerts"}', 0.0)
            retried += samples.get(
                'grainery_stream_events_redelivered_total{namespace="alerts"}', 0.0)
        return dead >= 3 and retried >= 3 * 2  # --stream-attempts 3: two retries each

    await eventually(counted, 10, "the metrics counting the retries and dead letters")


async def test_a_hook_failing_mid_batch_skips_only_its_event(
    client: GrainClient, redis: aioredis.Redis, cluster: TestCluster,
) -> None:
    """Events are delivered several per turn: one that keeps failing is dead-lettered alone;
    the events before it are not delivered again, those after it are delivered, in order."""
    key, picky = unique("mixed"), unique("picky")
    assert await client.get_grain("Picky", picky).follow("alerts", key)
    events = [{"n": 0}, {"n": 1}, {"n": 2, "bad": True}, {"n": 3}, {"n": 4}]
    tokens = await client.get_grain("Publisher", unique("pub")).publish_events(
        "alerts", key, events)
    good = [tokens[i] for i in (0, 1, 3, 4)]
    got = await wait_received(redis, f"Picky/{picky}", "alerts", key, good)
    assert got == [(tokens[i], events[i]) for i in (0, 1, 3, 4)]
    letters = [fields for _, fields in
               await redis.xrange(StreamKeys(cluster.cluster).dead_letters("alerts"))
               if fields[b"subscriber"] == f"Picky/{picky}".encode()]
    assert [letter[b"token"].decode() for letter in letters] == [tokens[2]]
    assert letters[0][b"error"].startswith(b"ValueError: refusing")


async def test_an_explicit_subscription_outlives_its_activation_and_can_end(
    client: GrainClient, redis: aioredis.Redis,
) -> None:
    key, name = unique("lasting"), unique("f")
    follower = client.get_grain("Follower", name)
    assert await follower.follow("orders", key)
    assert not await follower.follow("orders", key)  # already subscribed: nothing changes
    await follower.leave()  # deactivated after this call
    stream = client.get_stream("orders", key)
    first = await stream.publish({"after": "deactivation"})
    got = await wait_received(redis, f"Follower/{name}", "orders", key, [first])
    assert got == [(first, {"after": "deactivation"})]
    assert await follower.unfollow("orders", key)
    assert not await follower.unfollow("orders", key)


async def test_concurrent_client_publishes_are_all_delivered_in_token_order(
    client: GrainClient, redis: aioredis.Redis,
) -> None:
    """A client's concurrent publishes travel together (PublishBatch): each gets its own
    token, and the subscriber sees them all, in token order."""
    key = unique("burst")
    stream = client.get_stream("orders", key)
    tokens = await asyncio.gather(*(stream.publish({"i": i}) for i in range(300)))
    assert len(set(tokens)) == 300
    got = await wait_received(redis, f"OrderWatcher/{key}", "orders", key, list(tokens))
    order = sorted(tokens, key=lambda t: tuple(map(int, t.split("-"))))
    assert [token for token, _ in got] == order
    by_token = dict(zip(tokens, range(300), strict=True))
    assert all(event == {"i": by_token[token]} for token, event in got)


async def test_the_python_client_subscribes_and_resumes_from_a_token(
    client: GrainClient,
) -> None:
    stream = client.get_stream("watch", unique("w"))
    start = await stream.publish({"n": 0})
    seen: list[tuple[str, Any]] = []
    started = asyncio.Event()

    async def follow() -> None:
        async for token, event in stream.subscribe(from_token=start):
            seen.append((token, event))
            started.set()
            if len(seen) == 4:
                return

    reader = asyncio.create_task(follow())
    tokens = [await stream.publish({"n": n}) for n in range(1, 5)]
    await asyncio.wait_for(reader, 20)
    assert seen == [(token, {"n": n}) for n, token in enumerate(tokens, 1)]

    resumed: list[tuple[str, Any]] = []
    async for token, event in stream.subscribe(from_token=tokens[1]):
        resumed.append((token, event))
        if len(resumed) == 2:
            break
    assert resumed == seen[2:]

    everything = []
    async for token, _ in stream.subscribe(from_token="0"):
        everything.append(token)
        if len(everything) == 5:
            break
    assert everything == [start, *tokens]


def test_the_sync_client_publishes_and_subscribes(cluster: TestCluster) -> None:
    with cluster.sync_client() as sync:
        stream = sync.get_stream("watch", unique("sync"))
        tokens = [stream.publish({"n": n}) for n in range(3)]
        got = []
        for token, event in stream.subscribe(from_token="0"):
            got.append((token, event))
            if len(got) == 3:
                break
        assert got == [(token, {"n": n}) for n, token in enumerate(tokens)]


def grainery(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grainery", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_the_cli_publishes_and_subscribes(cluster: TestCluster) -> None:
    target = ["--target", cluster.addresses[0]]
    key = unique("cli")
    first = grainery("publish", *target, "orders", key, '{"sku": "a-1", "qty": 2}')
    assert first.returncode == 0, first.stderr
    second = grainery("publish", *target, "orders", key, "[1, 2]")
    tokens = [first.stdout.strip(), second.stdout.strip()]
    follow = grainery("subscribe", *target, "orders", key, "--from", "0", "--count", "2")
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.splitlines() == [f'{tokens[0]} {{"sku":"a-1","qty":2}}',
                                          f"{tokens[1]} [1,2]"]
    resumed = grainery("subscribe", *target, "orders", key, "--from", tokens[0], "--count", "1")
    assert resumed.stdout.splitlines() == [f"{tokens[1]} [1,2]"]
    bad = grainery("publish", *target, "orders", key, "{not json")
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "not valid JSON" in bad.stderr


async def test_bad_input_is_refused_with_invalid_argument(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    cases = [
        ("orders", "k", "{oops", "not valid JSON"),
        ("orders", "k", "", "JSON value"),
        ("", "k", "1", "namespace must not be empty"),
        ("orders", "", "1", "key must not be empty"),
        ("orders", "k" * (MAX_KEY_CHARS + 1), "1", "key too long"),
        ("orders", "k", json.dumps("x" * MAX_EVENT_BYTES), "too large"),
    ]
    async with grpc.aio.insecure_channel(cluster.addresses[0]) as channel:
        stub = pb_grpc.StreamsStub(channel)
        for namespace, key, event_json, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Publish(pb.PublishRequest(namespace=namespace, key=key,
                                                     event_json=event_json), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
            assert message in (refused.value.details() or ""), refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.Subscribe(pb.SubscribeRequest(namespace="orders", key="k",
                                                              from_token="yesterday")):
                pass
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        key = unique("batch")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PublishBatch(pb.PublishBatchRequest(events=[
                pb.PublishRequest(namespace="orders", key=key, event_json="1"),
                pb.PublishRequest(namespace="orders", key=key, event_json="{oops"),
            ]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith("event 1: stream event is not valid")
        assert await redis.xlen(StreamKeys(cluster.cluster).events(StreamId("orders", key))) == 0
    with pytest.raises(InvalidArgumentsError, match="not JSON-serialisable"):
        await client.get_stream("orders", "k").publish({"when": object()})
    # The silo is still fine.
    assert await client.get_stream("orders", unique("ok")).publish({"fine": True})


async def test_metrics_count_published_delivered_and_the_lag(
    client: GrainClient, redis: aioredis.Redis, cluster: TestCluster,
) -> None:
    key = unique("metered")
    token = await client.get_stream("metered", key).publish(1)
    second = await client.get_stream("orders", key).publish(2)
    await wait_received(redis, f"OrderWatcher/{key}", "orders", key, [second])

    def total(samples: list[dict[str, float]], name: str) -> float:
        return sum(s.get(name, 0.0) for s in samples)

    async def counted() -> bool:
        samples = [await asyncio.to_thread(silo.scrape) for silo in cluster.silos]
        published = total(samples, 'grainery_stream_events_published_total{namespace="metered"}')
        delivered = total(samples, 'grainery_stream_events_delivered_total{namespace="orders"}')
        lags = total(samples, 'grainery_stream_delivery_lag_seconds_count{namespace="orders"}')
        held = total(samples, "grainery_stream_partitions")
        assert (published, held) == (1, 32), (published, held)
        return delivered >= 1 and lags == delivered

    await eventually(counted, 10, f"metrics counting the event {token} and its delivery")
