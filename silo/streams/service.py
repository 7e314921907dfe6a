"""The silo's stream service: publishing, grain subscriptions, and the pump, wired once.

The runtime creates one per silo (silo/runtime.py), starts it once the silo is a member,
and calls ``partitions_changed`` on every membership change, fencing and rejoin, so the
pump follows the ring.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from grainery.client.tasks import spawn
from grainery.silo.cluster.partitions import PartitionOwnership
from grainery.silo.storage.pool import StorePool
from grainery.silo.streams.delivery import DeliveryPolicy, HookCall
from grainery.silo.streams.names import PARTITIONS, StreamId, StreamKeys, subscriber_field
from grainery.silo.streams.pump import StreamPump, cancel_all
from grainery.silo.streams.retention import run_retention
from grainery.silo.streams.store import StreamStore
from grainery.silo.streams.subscriptions import ImplicitSubscriptions

if TYPE_CHECKING:
    from grainery.silo.cluster.view import MembershipView
    from grainery.silo.metrics import SiloMetrics


@dataclass(frozen=True)
class StreamSettings:
    maxlen: int = 100_000  # events kept per stream (approximate, at least this many)
    max_age: float = 0.0  # seconds; 0 = no age limit
    attempts: int = 5  # hook failures before an event is dead-lettered
    lease_seconds: float = 4.0  # a partition's lease (a crashed pump's partitions wait this)

    def __post_init__(self) -> None:
        if self.maxlen < 1:
            raise ValueError("--stream-maxlen must be at least 1")
        if self.max_age < 0:
            raise ValueError("--stream-max-age must be >= 0 (0 = no age limit)")
        if self.attempts < 1:
            raise ValueError("--stream-attempts must be at least 1")


class StreamMetrics:
    """Delivery's reports, onto the silo's Prometheus metrics."""

    def __init__(self, metrics: SiloMetrics) -> None:
        self._m = metrics

    def delivered(self, namespace: str, lag: float) -> None:
        self._m.stream_delivered.labels(namespace).inc()
        self._m.stream_delivery_lag.labels(namespace).observe(lag)

    def redelivered(self, namespace: str) -> None:
        self._m.stream_redelivered.labels(namespace).inc()

    def dead_lettered(self, namespace: str) -> None:
        self._m.stream_dead_lettered.labels(namespace).inc()


def _side_connection(redis: aioredis.Redis, connections: int) -> aioredis.Redis:
    """A client on a pool of its own (same server, same settings and safety rules: see
    silo/storage/pool.py) for blocking reads, so they never hold connections that grain
    state and the directory need."""
    pool = redis.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "retry"}
    return aioredis.Redis(connection_pool=StorePool(
        connection_class=pool.connection_class, max_connections=connections, timeout=5.0,
        **kwargs,
    ))


class StreamService:
    def __init__(
        self, redis: aioredis.Redis, cluster: str, grain_classes: Iterable[tuple[str, Any]],
        membership: MembershipView, call: HookCall, metrics: SiloMetrics,
        settings: StreamSettings,
    ) -> None:
        self.settings = settings
        self.keys = StreamKeys(cluster, PARTITIONS)
        self.store = StreamStore(redis, self.keys, settings.maxlen)
        self.metrics = metrics
        self.ownership = PartitionOwnership("streams", PARTITIONS, membership)
        self._reader = _side_connection(redis, 2)
        self.pump = StreamPump(
            self.store, self._reader, self.ownership, lambda: membership.incarnation,
            ImplicitSubscriptions(grain_classes), call,
            DeliveryPolicy(attempts=settings.attempts), StreamMetrics(metrics),
            settings.lease_seconds, on_held=metrics.stream_partitions.set,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = False
        self._stopped = False

    def start(self) -> None:
        self.started = True
        self.ownership.update()
        self.pump.start()
        if self.settings.max_age > 0:
            spawn(run_retention(self.store, lambda: self.pump.held, self.settings.max_age),
                  name="grainery-streams-retention", owner=self._tasks)

    def partitions_changed(self, *_: object) -> None:
        """Membership changed (or this silo was fenced, or rejoined): follow the ring."""
        if self.started:
            self.ownership.update()

    async def stop(self) -> None:
        """Idempotent: the silo's drain and its final close both call it."""
        if self._stopped:
            return
        self._stopped = True
        self.started = False
        await cancel_all(self._tasks)
        await self.pump.stop()
        await self._reader.aclose()

    # ----- the API behind grains, the gRPC service and the CLI ------------
    async def publish(self, stream: StreamId, event_json: str) -> str:
        """Append a (checked) event; returns its token."""
        token = await self.store.publish(stream, event_json)
        self.metrics.stream_published.labels(stream.namespace).inc()
        return token

    async def publish_many(self, events: list[tuple[StreamId, str]]) -> list[str]:
        """Append checked events, in order, in one store round trip; their tokens."""
        tokens = await self.store.publish_many(events)
        for namespace, count in Counter(stream.namespace for stream, _ in events).items():
            self.metrics.stream_published.labels(namespace).inc(count)
        return tokens

    async def subscribe(self, grain_type: str, key: str, stream: StreamId) -> bool:
        return await self.store.subscribe(stream, subscriber_field(grain_type, key))

    async def unsubscribe(self, grain_type: str, key: str, stream: StreamId) -> bool:
        return await self.store.unsubscribe(stream, subscriber_field(grain_type, key))
