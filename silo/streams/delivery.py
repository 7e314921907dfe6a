"""One subscription's delivery: each event, in order, to the subscriber's ``on_stream_event``.

The waiting events go to the grain up to DELIVERY_BATCH at a time, in one system call and
one turn (the runtime hook ``_deliver_stream_events`` runs the hooks in order), because a
call per event costs more than the hooks of a busy stream. At-least-once: the position
moves (fenced by the partition's lease) only after the hooks returned, so a crash anywhere
before that delivers the events again; never skips one. A hook that raises fails the turn;
the events before it count as delivered, and its event is retried with back-off,
``attempts`` times in all; then the event is
dead-lettered (metric, log, a record in Redis) and skipped, so one bad event cannot stop the
subscription forever. Failures of the cluster rather than the hook (a silo unreachable, a
deadline, overload) are retried without limit, for as long as this silo pumps the
partition: they say nothing about the event. Each subscription runs on its own task, so a
slow or failing subscriber never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from grainery.client.errors import (
    DeadlineExceededError,
    GrainApplicationError,
    GrainError,
    InvalidArgumentsError,
    UnknownGrainTypeError,
    UnknownMethodError,
)
from grainery.silo import tracing
from grainery.silo.streams.feed import StreamFeed
from grainery.silo.streams.grain_api import BATCH_HOOK, interrupted_at
from grainery.silo.streams.names import StreamId, token_millis
from grainery.silo.streams.store import Entry, StreamStore
from grainery.silo.streams.subscriptions import Subscriber

log = logging.getLogger("grainery.streams")

BATCH = 128  # events read at a time
# Events per delivery call (one system call, one turn of the subscriber), and their JSON's
# bound. The position is stored after each call, in the background: a crash redelivers at
# most two calls' events per subscription, and a busy stream does not pay a position write
# per event.
DELIVERY_BATCH = 32
DELIVERY_BYTES = 512 * 1024
# Errors that are about the subscriber (its hook raised, it has no hook, no such type):
# retried `attempts` times, then dead-lettered.
SUBSCRIBER_FAULTS = (GrainApplicationError, UnknownGrainTypeError, UnknownMethodError,
                     InvalidArgumentsError)

HookCall = Callable[[str, str, str, list[Any], float], Awaitable[Any]]


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int = 5  # hook failures before an event is dead-lettered
    backoff: float = 0.05  # seconds before the first retry, doubling
    max_backoff: float = 2.0
    timeout: float = 30.0  # per hook call


class StreamMetricsSink(Protocol):
    """What delivery reports (silo/metrics.py owns the Prometheus objects)."""

    def delivered(self, namespace: str, lag: float) -> None:
        ...

    def redelivered(self, namespace: str) -> None:
        ...

    def dead_lettered(self, namespace: str) -> None:
        ...


class LeaseLost(Exception):
    """The partition's lease is no longer this silo's: stop without moving anything."""


class Subscription:
    """Delivers ``feed.stream``'s events to ``subscriber`` from ``position`` on."""

    def __init__(
        self, feed: StreamFeed, subscriber: Subscriber, position: str, store: StreamStore,
        call: HookCall, holds: Callable[[], bool], incarnation: str, policy: DeliveryPolicy,
        metrics: StreamMetricsSink,
    ) -> None:
        self.feed = feed
        self.subscriber = subscriber
        self.position = position
        self._store = store
        self._call = call
        self._holds = holds
        self._incarnation = incarnation
        self._policy = policy
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._done = position  # the last event whose hook returned (or was dead-lettered)
        self._size = DELIVERY_BATCH  # events per delivery call
        self._attempt = 0  # delivery calls since the last event was handled
        self._failures = 0  # hook failures of the first event not handled yet
        self._stored = position  # the position last written to the store
        self._writer: asyncio.Task[None] | None = None
        self._gone = False  # the store said: this explicit subscription no longer exists
        self._lost = False  # the store said: the partition's lease is not ours

    def wake(self) -> None:
        """New events were read (called by the feed)."""
        self._wake.set()

    def resume_at(self, position: str) -> None:
        """Continue from a stored position (after a store error interrupted a batch)."""
        self.position = self._done = self._stored = position

    @property
    def stream(self) -> StreamId:
        return self.feed.stream

    async def run(self) -> bool:
        """Deliver until the subscription is gone (True) or this silo's hold on the
        partition lapses (False: the pump resumes it if the lease is renewed)."""
        self.feed.listen(self)
        try:
            while self._holds():
                self._wake.clear()  # before looking: a feed after this wakes the wait below
                batch = self.feed.after(self.position, BATCH)
                if batch is None:
                    batch = await self._store.range_after(self.stream, self.position, BATCH)
                if not batch:
                    await self._wait()
                    continue
                while batch:
                    batch = await self._deliver(batch)
                    self.position = self._done
                    self._store_position()
                    if self._gone:
                        return True  # unsubscribed
                    if self._lost:
                        raise LeaseLost
            return False
        except LeaseLost:
            log.info("stream %s: lease lapsed, %s paused at %s", self.stream, self.subscriber,
                     self.position)
            return False
        finally:
            self.feed.unlisten(self)
            with contextlib.suppress(Exception):  # the interruption is what matters
                await self._flush()  # store what was delivered before it

    async def _wait(self) -> None:
        # Bounded: a missed wake-up (the pump's reader reconnecting) costs a second at most.
        try:
            await asyncio.wait_for(self._wake.wait(), 1.0)
        except asyncio.TimeoutError:
            pass

    def _slice(self, entries: list[Entry]) -> list[Entry]:
        """The events of the next delivery call: in order, at most ``self._size`` of them and
        DELIVERY_BYTES of JSON (always at least one)."""
        size = 0
        for n, (_, event_json) in enumerate(entries[:self._size]):
            size += len(event_json)
            if n and size > DELIVERY_BYTES:
                return entries[:n]
        return entries[:self._size]

    async def _deliver(self, entries: list[Entry]) -> list[Entry]:
        """One delivery call of the first events of ``entries`` (the grain runs its
        ``on_stream_event`` for each, in order, in one turn); returns the events left. A
        hook that raised is retried from the event that raised, after a back-off; after
        ``attempts`` failures of that event it is dead-lettered and skipped."""
        stream, subscriber, policy = self.stream, self.subscriber, self._policy
        chunk = self._slice(entries)
        self._attempt += 1
        if self._attempt > 1:
            self._metrics.redelivered(stream.namespace)
        if not self._holds():
            raise LeaseLost
        try:
            # The delivery's dispatch and turn nest under this span when tracing is on.
            with tracing.span("grainery.stream.deliver", "consumer", {
                "messaging.system": "grainery", "messaging.destination.name": stream.namespace,
                "messaging.batch.message_count": len(chunk),
                "grainery.grain_type": subscriber.grain_type,
                "grainery.stream.first_token": chunk[0][0],
                "grainery.stream.attempt": self._attempt,
            } if tracing.enabled() else None):
                await self._call(subscriber.grain_type, subscriber.key, BATCH_HOOK,
                                 [stream.namespace, stream.key, [list(e) for e in chunk]],
                                 policy.timeout)
            self._handled(chunk)
            return entries[len(chunk):]
        except SUBSCRIBER_FAULTS as error:
            done, cause = interrupted_at(error)
            self._handled(chunk[:done])
            entries = entries[done:]
            self._failures = 1 if done else self._failures + 1
            if self._failures >= policy.attempts:
                await self._dead_letter(entries[0], cause)
                self._done = entries[0][0]
                self._failures = self._attempt = 0
                return entries[1:]
            delay = policy.backoff * 2 ** (self._failures - 1)
        except GrainError as error:  # the cluster, not the hook: keep trying
            log.debug("stream %s -> %s: %s, retrying", stream, subscriber, error)
            if isinstance(error, DeadlineExceededError):
                self._size = 1  # a slow hook: one event per call until one succeeds
            delay = policy.backoff * 2 ** min(self._attempt, 6)
        await asyncio.sleep(min(delay, policy.max_backoff))
        return entries

    def _handled(self, entries: list[Entry]) -> None:
        """Their hooks returned: count them (and their lag); the position may move past."""
        if not entries:
            return
        now, namespace = time.time(), self.stream.namespace
        for token, _ in entries:
            self._metrics.delivered(namespace, max(0.0, now - token_millis(token) / 1000))
        self._done = entries[-1][0]
        self._failures = self._attempt = 0
        self._size = DELIVERY_BATCH

    async def _dead_letter(self, entry: Entry, text: str) -> None:
        token, event_json = entry
        stream, subscriber = self.stream, self.subscriber
        log.warning("stream %s: %s failed on event %s %d times (%s); dead-lettered and "
                    "skipped", stream, subscriber, token, self._policy.attempts, text)
        await self._store.dead_letter(stream, str(subscriber), token, event_json, text)
        self._metrics.dead_lettered(stream.namespace)

    def _store_position(self) -> None:
        """Write the position in the background, one write at a time, always the newest: the
        next delivery does not wait for the store (the position still moves only after the
        hooks returned, and never backwards)."""
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_positions())

    async def _write_positions(self) -> None:
        while self._stored != self.position and not (self._gone or self._lost):
            target = self.position
            try:
                moved = await self._store.advance(
                    self.stream, self.subscriber.field, target, self._incarnation,
                    self.subscriber.explicit,
                )
            except RedisError as exc:  # the next delivery (or the flush) tries again
                log.warning("stream %s -> %s: position not stored yet: %s", self.stream,
                            self.subscriber, exc)
                return
            if moved < 0:
                self._lost = True
            elif moved == 0:
                self._gone = True
            else:
                self._stored = target

    async def _flush(self) -> None:
        """Wait for the write in flight, then store whatever was delivered after it."""
        if self._writer is not None:
            await asyncio.shield(self._writer)
        await self._write_positions()
