"""The pump: delivers the streams of the partitions this silo owns on the ring.

Ownership comes from the ring (``PartitionOwnership("streams", ...)``) and moves on join,
leave and crash. Because two silos may both believe they own a partition while their views
differ, a silo pumps a partition only while it holds the partition's lease in Redis (SET NX
PX with its incarnation, renewed every quarter lease); every position write is a
compare-and-set against that lease (store.advance), so a superseded pump cannot move a
position, and the new holder resumes from the stored positions.

Reading is one ``XREAD BLOCK`` per silo over all the streams of its held partitions plus
each partition's bell (which says "a new stream" or "its subscriptions changed"), not a poll
per stream. Each subscription then delivers on its own task (silo/streams/delivery.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.tasks import spawn
from grainery.silo.cluster.partitions import PartitionOwnership
from grainery.silo.streams.delivery import DeliveryPolicy, HookCall, StreamMetricsSink, Subscription
from grainery.silo.streams.feed import StreamFeed
from grainery.silo.streams.names import StreamId
from grainery.silo.streams.store import StreamStore, decode_entries
from grainery.silo.streams.subscriptions import ImplicitSubscriptions, subscribers_of

log = logging.getLogger("grainery.streams")

READ_BLOCK_MS = 250  # also how long a newly held partition waits to join the read
READ_COUNT = 512
TAKE_RETRY = 0.2  # seconds between tries for a lease the previous holder still has


@dataclass
class Hold:
    incarnation: str
    until: float  # monotonic time up to which the lease is surely still ours


async def cancel_all(tasks: set[asyncio.Task[Any]], timeout: float = 3.0) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those still running (a store
    client may turn a cancellation into an error that a retry loop then absorbs), at most
    ``timeout`` seconds: a stopping silo must not hang on a background task."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = [task for task in tasks if not task.done()]
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.2)
        pending = [task for task in pending if not task.done()]
    if pending:
        log.warning("streams: %d background tasks did not stop: %s", len(pending),
                    ", ".join(task.get_name() for task in pending))


class StreamPump:
    def __init__(
        self, store: StreamStore, reader: aioredis.Redis, ownership: PartitionOwnership,
        incarnation: Callable[[], str], implicit: ImplicitSubscriptions, call: HookCall,
        policy: DeliveryPolicy, metrics: StreamMetricsSink, lease_seconds: float,
        on_held: Callable[[int], None] = lambda count: None,
    ) -> None:
        self._store = store
        self._keys = store.keys
        self._reader = reader
        self._ownership = ownership
        self._incarnation = incarnation
        self._implicit = implicit
        self._call = call
        self._policy = policy
        self._metrics = metrics
        self._lease_ms = int(lease_seconds * 1000)
        self._on_held = on_held
        self._held: dict[int, Hold] = {}
        self._bells: dict[int, str] = {}
        self._feeds: dict[StreamId, StreamFeed] = {}
        self._running: dict[StreamId, dict[str, asyncio.Task[None]]] = {}
        self._sync_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # ----- lifecycle ------------------------------------------------------
    def start(self) -> None:
        self._ownership.on_change(self._partitions_changed)
        self._partitions_changed(self._ownership.owned, frozenset())
        spawn(self._read_loop(), name="grainery-streams-read", owner=self._tasks)
        spawn(self._keep_leases(), name="grainery-streams-leases", owner=self._tasks)

    async def stop(self) -> None:
        """Stop delivering and hand the leases back (the next owner need not wait them out)."""
        self._stopping = True
        held = dict(self._held)
        for partition in list(self._held):
            self._drop(partition, release=False)
        await cancel_all(self._tasks)
        for partition, hold in held.items():
            try:
                await self._store.release_lease(partition, hold.incarnation)
            except RedisError:
                pass  # it lapses by itself

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def holds(self, partition: int, incarnation: str) -> bool:
        hold = self._held.get(partition)
        return (hold is not None and hold.incarnation == incarnation
                and time.monotonic() < hold.until)

    # ----- partitions -----------------------------------------------------
    def _partitions_changed(self, gained: frozenset[int], lost: frozenset[int]) -> None:
        for partition in lost:
            self._drop(partition)
        for partition in gained:
            spawn(self._take(partition), name="grainery-streams-take", owner=self._tasks)

    async def _take(self, partition: int) -> None:
        """Wait for the lease (the previous holder releases it or it lapses), then start
        every subscription of the partition's streams from its stored position."""
        incarnation = self._incarnation()
        while (not self._stopping and self._ownership.owns(partition)
               and partition not in self._held):
            sent = time.monotonic()
            try:
                if await self._store.hold_lease(partition, incarnation, self._lease_ms):
                    # The bell's position first: a stream added from now on rings it.
                    self._bells[partition] = await self._store.bell_cursor(partition)
                    self._held[partition] = Hold(incarnation, sent + self._lease_ms * 0.75e-3)
                    self._on_held(len(self._held))
                    log.debug("streams: pumping partition %d", partition)
                    break
            except RedisError as exc:
                log.warning("streams: could not take partition %d: %s", partition, exc)
            await asyncio.sleep(TAKE_RETRY)
        if partition not in self._held:
            return
        streams = await self._store.streams_of(partition)
        for stream in streams:
            await self._sync(stream)

    def _drop(self, partition: int, release: bool = True) -> None:
        hold = self._held.pop(partition, None)
        self._bells.pop(partition, None)
        if hold is None:
            return
        self._on_held(len(self._held))
        for stream in [s for s in self._feeds if self._keys.partition(s) == partition]:
            self._feeds.pop(stream, None)
            for task in self._running.pop(stream, {}).values():
                task.cancel()
        log.debug("streams: stopped pumping partition %d", partition)
        if release:
            spawn(self._store.release_lease(partition, hold.incarnation),
                  name="grainery-streams-release", owner=self._tasks)

    async def _keep_leases(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._lease_ms / 4000)
            held = list(self._held.items())
            by_incarnation: dict[str, list[tuple[int, Hold]]] = {}
            for partition, hold in held:
                by_incarnation.setdefault(hold.incarnation, []).append((partition, hold))
            for incarnation, holds in by_incarnation.items():
                sent = time.monotonic()
                try:
                    renewed = await self._store.hold_leases(
                        [partition for partition, _ in holds], incarnation, self._lease_ms)
                except RedisError as exc:
                    log.warning("streams: lease renewal failed: %s", exc)
                    continue  # they stay valid until `until`; deliveries pause after that
                for (partition, hold), ours in zip(holds, renewed, strict=True):
                    if self._held.get(partition) is not hold:
                        continue
                    if ours:
                        hold.until = sent + self._lease_ms * 0.75e-3
                    else:
                        log.warning("streams: partition %d's lease is held by another silo",
                                    partition)
                        self._drop(partition, release=False)

    # ----- streams and subscriptions --------------------------------------
    async def _sync(self, stream: StreamId) -> None:
        """Start (or stop) the subscriptions of ``stream`` so they match the store's."""
        async with self._sync_lock:
            partition = self._keys.partition(stream)
            hold = self._held.get(partition)
            if hold is None:
                return
            wanted = await subscribers_of(stream, self._implicit, self._store)
            if not wanted:  # no subscriber: not read at all (a subscribe rings the bell)
                self._feeds.pop(stream, None)
                for task in self._running.pop(stream, {}).values():
                    task.cancel()
                return
            feed = self._feeds.get(stream)
            if feed is None:
                feed = StreamFeed(stream, await self._store.last_token(stream))
            positions = await self._store.positions(stream)
            if self._held.get(partition) is not hold:
                return  # dropped meanwhile
            self._feeds.setdefault(stream, feed)
            feed = self._feeds[stream]
            running = self._running.setdefault(stream, {})
            for field in [f for f in running if f not in wanted]:
                running.pop(field).cancel()
            for field, subscriber in wanted.items():
                if field in running:
                    continue
                position = positions.get(field)
                if position is None:
                    if subscriber.explicit:
                        continue  # subscribed and unsubscribed meanwhile
                    position = "0-0"  # an implicit subscriber gets the whole retained stream
                subscription = Subscription(
                    feed, subscriber, position, self._store, self._call,
                    partial(self.holds, partition, hold.incarnation),
                    hold.incarnation, self._policy, self._metrics,
                )
                running[field] = spawn(self._deliver(subscription, partition, hold),
                                       name="grainery-stream-delivery", owner=self._tasks)

    async def _deliver(self, subscription: Subscription, partition: int, hold: Hold) -> None:
        """Run one subscription while this silo keeps the partition; survives store errors
        (resuming from the stored position) and lease lapses that end in a renewal."""
        try:
            while self._held.get(partition) is hold:
                if not self.holds(partition, hold.incarnation):
                    await asyncio.sleep(0.05)  # renewal pending: pause, do not deliver
                    continue
                try:
                    if await subscription.run():
                        return  # unsubscribed
                except RedisError as exc:
                    log.warning("stream %s -> %s: store error, resuming: %s",
                                subscription.stream, subscription.subscriber, exc)
                    await asyncio.sleep(0.5)
                    stored = await self._store.positions(subscription.stream)
                    position = stored.get(subscription.subscriber.field)
                    if position is None and subscription.subscriber.explicit:
                        return
                    subscription.resume_at(position or "0-0")
        except RedisError:
            log.exception("stream %s -> %s stopped", subscription.stream,
                          subscription.subscriber)
        finally:
            running = self._running.get(subscription.stream, {})
            if running.get(subscription.subscriber.field) is asyncio.current_task():
                running.pop(subscription.subscriber.field)

    # ----- the one read ---------------------------------------------------
    async def _read_loop(self) -> None:
        while not self._stopping:
            positions: dict[str, str] = {}
            targets: dict[str, StreamId | int] = {}
            for partition, cursor in self._bells.items():
                key = self._keys.bell(partition)
                positions[key], targets[key] = cursor, partition
            for stream, feed in self._feeds.items():
                key = self._keys.events(stream)
                positions[key], targets[key] = feed.cursor, stream
            if not positions:
                await asyncio.sleep(READ_BLOCK_MS / 1000)
                continue
            try:
                replies: Any = await self._reader.xread(
                    cast(Any, positions), count=READ_COUNT, block=READ_BLOCK_MS
                )
            except RedisError as exc:
                log.warning("streams: read failed, retrying: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for raw_key, raw_entries in replies or []:
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                target = targets.get(key)
                if isinstance(target, int):
                    self._ring(target, raw_entries)
                elif target is not None:
                    known = self._feeds.get(target)
                    if known is not None:
                        known.feed(decode_entries(raw_entries))

    def _ring(self, partition: int, raw_entries: list[Any]) -> None:
        if partition not in self._bells or not raw_entries:
            return
        last = raw_entries[-1][0]
        self._bells[partition] = last.decode() if isinstance(last, bytes) else str(last)
        names = set()
        for _, fields in raw_entries:
            name = fields.get(b"s", fields.get("s"))
            if name is not None:
                names.add(name.decode() if isinstance(name, bytes) else str(name))
        for name in names:
            spawn(self._sync(StreamId.from_name(name)), name="grainery-streams-sync",
                  owner=self._tasks)
