"""The store scripts behind streams, against a real Redis-protocol server (issue 12): a
partition's lease, the fenced position write (a pump that lost the lease cannot move a
position), subscriptions starting at the stream's end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from grainery.silo.streams.names import StreamId, StreamKeys, subscriber_field
from grainery.silo.streams.retention import trim_by_age
from grainery.silo.streams.store import StreamStore
from grainery.silo.testing import TestStore


@pytest.fixture
async def store(store: TestStore) -> AsyncIterator[StreamStore]:
    connection = aioredis.Redis.from_url(store.url)
    yield StreamStore(connection, StreamKeys(f"test-{uuid.uuid4().hex[:8]}"), maxlen=1000)
    await connection.aclose()


async def test_a_superseded_pump_cannot_move_a_position(store: StreamStore) -> None:
    stream = StreamId("orders", "k")
    partition = store.keys.partition(stream)
    field = subscriber_field("Watcher", "k")
    tokens = [await store.publish(stream, str(n)) for n in range(3)]
    assert await store.hold_lease(partition, "silo-a:1", 5000)
    assert not await store.hold_lease(partition, "silo-b:1", 5000)  # a's, until released
    assert await store.advance(stream, field, tokens[0], "silo-a:1", explicit=False) == 1
    # silo-b believes it owns the partition (its view of the ring changed first): refused.
    assert await store.advance(stream, field, tokens[2], "silo-b:1", explicit=False) == -1
    assert await store.positions(stream) == {field: tokens[0]}
    await store.release_lease(partition, "silo-b:1")  # not its lease: nothing happens
    assert not await store.hold_lease(partition, "silo-b:1", 5000)
    await store.release_lease(partition, "silo-a:1")
    assert await store.hold_lease(partition, "silo-b:1", 5000)
    assert await store.advance(stream, field, tokens[1], "silo-a:1", explicit=False) == -1
    assert await store.advance(stream, field, tokens[1], "silo-b:1", explicit=False) == 1
    assert await store.positions(stream) == {field: tokens[1]}


async def test_a_subscription_starts_at_the_end_and_ends_with_unsubscribe(
    store: StreamStore,
) -> None:
    stream = StreamId("orders", "sub")
    partition = store.keys.partition(stream)
    field = subscriber_field("Follower", "f")
    before = await store.publish(stream, '"before"')
    assert await store.subscribe(stream, field)
    assert not await store.subscribe(stream, field)
    assert await store.positions(stream) == {field: before}
    assert await store.explicit_subscribers(stream) == [field]
    assert stream in await store.streams_of(partition)
    assert await store.hold_lease(partition, "silo-a:1", 5000)
    after = await store.publish(stream, '"after"')
    assert await store.range_after(stream, before, 10) == [(after, '"after"')]
    assert await store.unsubscribe(stream, field)
    assert not await store.unsubscribe(stream, field)
    # The pump that still delivered to it learns that it is gone: nothing is written.
    assert await store.advance(stream, field, after, "silo-a:1", explicit=True) == 0
    assert await store.positions(stream) == {}


async def test_retention_bounds_a_stream_by_length_and_by_age(store: StreamStore) -> None:
    """Trimming is approximate (whole internal nodes of about 100 entries): a stream keeps at
    least the bound and not much more."""
    store.maxlen = 50
    stream = StreamId("logs", "long")
    for n in range(500):
        await store.publish(stream, str(n))
    length = await store.redis.xlen(store.keys.events(stream))
    assert 50 <= length <= 150, length
    aged = StreamId("logs", "aged")
    store.maxlen = 100_000
    for n in range(300):
        await store.publish(aged, str(n))
    partition = store.keys.partition(aged)
    removed = await trim_by_age(store, [partition], max_age=-1.0)  # everything is too old
    assert removed >= 200
    assert await store.redis.xlen(store.keys.events(aged)) == 300 - removed


async def test_a_batch_over_several_partitions_keeps_each_streams_order(
    store: StreamStore,
) -> None:
    """publish_many sends one script per partition: the tokens still come back in the
    batch's order, each stream holds its events in publish order, and each new stream is
    indexed and rung on its partition's bell once."""
    streams = [StreamId("orders", f"batch-{n}") for n in range(12)]
    partitions = {store.keys.partition(s) for s in streams}
    assert len(partitions) > 1  # the batch really spans partitions
    batch = [(streams[n % len(streams)], f'{{"n":{n}}}') for n in range(60)]
    tokens = await store.publish_many(batch)
    assert len(tokens) == 60  # a token is unique within its stream (checked below)
    for stream in streams:
        mine = [(token, event) for token, (s, event) in zip(tokens, batch, strict=True)
                if s == stream]
        assert await store.range_after(stream, "0-0", 100) == mine
    for partition in partitions:
        indexed = {s.name for s in await store.streams_of(partition)}
        assert indexed == {s.name for s in streams if store.keys.partition(s) == partition}
        notes = await store.redis.xrange(store.keys.bell(partition))
        assert sorted(fields[b"s"].decode() for _, fields in notes) == sorted(indexed)
    await store.publish_many(batch[:12])  # known streams: no new index entry, no bell
    assert sum([len(await store.redis.xrange(store.keys.bell(p))) for p in partitions]) == 12


async def test_leases_renewed_together_answer_for_each_partition(store: StreamStore) -> None:
    assert await store.hold_lease(1, "silo-a:1", 5000)
    assert await store.hold_lease(2, "silo-b:1", 5000)
    assert await store.hold_leases([1, 2, 3], "silo-a:1", 5000) == [True, False, True]
    assert 0 < await store.redis.pttl(store.keys.lease(3)) <= 5000
    assert (await store.redis.get(store.keys.lease(2))) == b"silo-b:1"
