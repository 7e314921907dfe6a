"""Cluster membership in Redis: join, lease renewal, failure detection, self-fencing.

Invariants:
- Liveness is decided by Redis's clock alone: a member is dead once Redis time
  passes its lease, and a dead incarnation never comes back (heartbeats of a
  dead or deleted incarnation are refused; the silo must rejoin as a new
  incarnation).
- A silo stops serving *before* others may consider it dead: it trusts its
  lease only until ``sent + lease * (1 - max_drift) - margin`` on its own
  monotonic clock, where ``sent`` is when it sent the renewal that Redis
  accepted. Redis granted the lease no earlier than that instant, so with clock
  rates differing by less than ``max_drift`` the silo fences first.
- The lease is renewed on a thread of its own (:mod:`silo.cluster.heartbeat`),
  so grain code that blocks the event loop cannot make the silo fence itself;
  ``serving`` is computed from the lease's deadline, so it turns False on time
  even while the loop is blocked. Changes reach the loop via
  ``call_soon_threadsafe``.
- Every change bumps a version; silos poll it on each heartbeat and adopt
  newer snapshots, so they see changes within one heartbeat interval.
- Dead and left rows are pruned (see :mod:`silo.cluster.membership_scripts`);
  an incarnation that a fresh read no longer knows is gone for good and is
  remembered as such, so takeovers of its grains need no further reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.routing import (
    ACTIVE,
    DEAD,
    FENCED,
    GONE_STATES,
    LEAVING,
    LEFT,
    MemberInfo,
    MembershipSnapshot,
    PlacementRing,
)
from grainery.silo.cluster import membership_scripts as scripts
from grainery.silo.cluster.heartbeat import HeartbeatThread
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage.keys import KeySpace

log = logging.getLogger("grainery.membership")

JOINING = "joining"
GONE_MEMORY = 4096  # incarnations remembered as gone after their rows were pruned


@dataclass(frozen=True)
class MembershipTiming:
    heartbeat_interval: float = 1.0
    lease_duration: float = 4.0
    max_clock_drift: float = 0.01  # relative rate difference between silo and Redis clocks
    fence_margin: float = 0.25  # seconds of slack for a late renewal
    dead_retention: float = 30.0  # dead/left rows stay visible (e.g. in `status`) this long

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        if self.lease_duration < 2 * self.heartbeat_interval:
            raise ValueError("lease duration must be at least two heartbeat intervals")
        if self.trusted_for() <= self.heartbeat_interval:
            raise ValueError(
                f"a lease of {self.lease_duration}s can be trusted for only "
                f"{self.trusted_for():.2f}s after drift and margin, which is not longer than "
                f"one heartbeat ({self.heartbeat_interval}s): lengthen the lease"
            )

    def trusted_for(self) -> float:
        return self.lease_duration * (1 - self.max_clock_drift) - self.fence_margin


class MembershipService:
    """This silo's membership: joins, renews its lease, follows the others.

    ``serving`` is the self-fencing switch: False whenever the lease cannot be
    trusted; the silo rejects calls and drops activations while it is False.
    ``state`` is this silo's own view of itself: joining, active, leaving,
    fenced (until it rejoins as a new incarnation) or left.
    """

    def __init__(
        self,
        redis_client: aioredis.Redis,
        keys: KeySpace,
        silo_id: str,
        address: str,
        timing: MembershipTiming,
        metrics: SiloMetrics,
        heartbeat_redis: redis.Redis | None = None,
    ) -> None:
        self._redis = redis_client
        self._keys = keys
        self.silo_id = silo_id
        self.address = address
        self.timing = timing
        self._metrics = metrics
        self.incarnation = ""
        self.state = JOINING
        self.started_at = time.time()
        self.snapshot = MembershipSnapshot(version=0, members=(), cluster=keys.cluster)
        self.ring = PlacementRing(self.snapshot)
        self._lock = threading.Lock()  # state, incarnation and lease change together
        self._trusted_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._heartbeat = HeartbeatThread(self, heartbeat_redis) if heartbeat_redis else None
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[MembershipSnapshot], None]] = []
        self._on_fenced: list[Callable[[], None]] = []
        self._on_rejoined: list[Callable[[], None]] = []
        self._join_script = redis_client.register_script(scripts.JOIN)
        self._renew_script = redis_client.register_script(scripts.RENEW)
        self._read_script = redis_client.register_script(scripts.READ)
        self._leave_script = redis_client.register_script(scripts.LEAVE)
        self._reading: asyncio.Future[MembershipSnapshot] | None = None
        self._next_read: asyncio.Future[MembershipSnapshot] | None = None
        self._asked: set[str] = set()  # incarnations is_alive did not know
        self._gone: OrderedDict[str, None] = OrderedDict()
        # Set by the runtime: a fenced silo rejoins only once no old turn is still running.
        self.rejoin_gate: Callable[[], bool] = lambda: True

    # ----- observers ------------------------------------------------------
    def on_change(self, listener: Callable[[MembershipSnapshot], None]) -> None:
        self._listeners.append(listener)

    def on_fenced(self, listener: Callable[[], None]) -> None:
        """Called on the event loop once this silo has fenced itself."""
        self._on_fenced.append(listener)

    def on_rejoined(self, listener: Callable[[], None]) -> None:
        """Called on the event loop once a fenced silo has rejoined as a new incarnation."""
        self._on_rejoined.append(listener)

    @property
    def serving(self) -> bool:
        return self.state in (ACTIVE, LEAVING) and time.monotonic() < self._trusted_until

    def me(self) -> MemberInfo:
        return MemberInfo(self.silo_id, self.address, self.state, self.started_at, self.incarnation)

    def is_alive(self, incarnation: str) -> bool | None:
        """True/False from the current snapshot; None when the incarnation is unknown."""
        if incarnation == self.incarnation:
            return self.state not in GONE_STATES
        if incarnation in self._gone:
            return False
        member = self.snapshot.by_incarnation(incarnation)
        if member is None:
            if len(self._asked) < GONE_MEMORY:  # beyond that, only the shortcut is lost
                self._asked.add(incarnation)
            return None
        return member.state not in GONE_STATES

    # ----- lifecycle ------------------------------------------------------
    async def start(self) -> None:
        if self._heartbeat is None:
            raise RuntimeError("membership needs its own Redis connection for the heartbeat")
        self._bind_loop()
        await self._join()
        self._heartbeat.start()
        self._tasks = [
            asyncio.create_task(self._rejoin_loop(), name="grainery-membership-rejoin"),
            asyncio.create_task(self._watch_changes(), name="grainery-membership-watch"),
        ]

    async def set_leaving(self) -> None:
        """Stay alive (lease keeps renewing) but leave the placement ring."""
        with self._lock:
            if self.state != ACTIVE:
                return  # fenced or already leaving: nothing to announce
            self.state = LEAVING
        with contextlib.suppress(RedisError, OSError):
            await self._renew(LEAVING)
            await self.refresh()

    async def stop(self) -> None:
        if self._heartbeat is not None:
            await asyncio.to_thread(self._heartbeat.stop, 2 * self.timing.heartbeat_interval)
        for task in self._tasks:
            task.cancel()
            # Bounded: a task stuck in a socket call must not keep the silo from exiting.
            await asyncio.wait({task}, timeout=2.0)
        if self.incarnation:
            with contextlib.suppress(RedisError, OSError):
                await self._leave_script(keys=self.script_keys(), args=[self.incarnation])
        with self._lock:
            self.state = LEFT
            self._trusted_until = 0.0

    # ----- called by the heartbeat thread (any thread) --------------------
    def script_keys(self) -> list[str]:
        return [self._keys.members, self._keys.members_version, self._keys.members_channel]

    def lease_ms(self) -> int:
        return int(self.timing.lease_duration * 1000)

    def retention_ms(self) -> int:
        return int(self.timing.dead_retention * 1000)

    def holds_lease(self, incarnation: str) -> bool:
        return incarnation == self.incarnation and self.state in (ACTIVE, LEAVING)

    def lease_renewed(self, incarnation: str, sent: float) -> None:
        with self._lock:
            if self.holds_lease(incarnation):
                self._trusted_until = sent + self.timing.trusted_for()

    def lease_lapsed(self, incarnation: str) -> bool:
        return self.holds_lease(incarnation) and time.monotonic() >= self._trusted_until

    def fence(self, incarnation: str, why: str) -> None:
        """Stop serving now (any thread); listeners run on the event loop."""
        with self._lock:
            if not self.holds_lease(incarnation):
                return
            self.state = FENCED
            self._trusted_until = 0.0
        log.error("fencing: %s; this silo stops serving", why)
        self._on_loop(self._notify, self._on_fenced)

    def adopt_threadsafe(self, reply: list[Any]) -> None:
        self._on_loop(self._adopt_reply, reply)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            callback(*args)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the silo is exiting
            loop.call_soon_threadsafe(callback, *args)

    @staticmethod
    def _notify(listeners: list[Callable[[], None]]) -> None:
        for listener in listeners:
            listener()

    # ----- internals ------------------------------------------------------
    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    async def _join(self) -> None:
        if self._loop is None:
            self._bind_loop()
        incarnation = f"{self.silo_id}:{uuid.uuid4().hex[:12]}"
        started_at = time.time()
        record = {
            "silo_id": self.silo_id,
            "address": self.address,
            "started_at": started_at,
            "incarnation": incarnation,
        }
        sent = time.monotonic()
        await self._join_script(
            keys=self.script_keys(),
            args=[incarnation, orjson.dumps(record).decode(), self.lease_ms()],
        )
        with self._lock:
            self.incarnation, self.started_at = incarnation, started_at
            self._trusted_until = sent + self.timing.trusted_for()
            self.state = ACTIVE
        log.info("joined cluster %s as %s", self._keys.cluster, self.incarnation)
        await self.refresh()

    async def _renew(self, new_state: str = "") -> int:
        incarnation = self.incarnation
        sent = time.monotonic()
        verdict, version = await self._renew_script(
            keys=self.script_keys(), args=[incarnation, self.lease_ms(), new_state]
        )
        if (verdict.decode() if isinstance(verdict, bytes) else verdict) != "ok":
            self.fence(incarnation, "the cluster declared this silo dead")
            return -1
        self.lease_renewed(incarnation, sent)
        return int(version)

    async def refresh(self) -> MembershipSnapshot:
        """Read the membership from Redis (declaring lapsed leases dead) and adopt it.

        Callers that arrive while a read is in flight share the *next* read, which
        starts after they asked: a burst of takeovers costs two reads, not one each,
        and none of them acts on a read older than its own question."""
        if self._reading is None:
            self._reading = self._start_read(None)
            read = self._reading
        else:
            if self._next_read is None:
                self._next_read = self._start_read(self._reading)
            read = self._next_read
        return await asyncio.shield(read)

    def _start_read(
        self, after: asyncio.Future[MembershipSnapshot] | None
    ) -> asyncio.Future[MembershipSnapshot]:
        task = asyncio.ensure_future(self._read_after(after))
        task.add_done_callback(self._read_done)
        return task

    def _read_done(self, task: asyncio.Future[MembershipSnapshot]) -> None:
        if task is self._reading:
            self._reading, self._next_read = self._next_read, None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter gets it through shield

    async def _read_after(
        self, previous: asyncio.Future[MembershipSnapshot] | None
    ) -> MembershipSnapshot:
        if previous is not None:
            await asyncio.wait({previous})
        asked, self._asked = self._asked, set()
        reply = await self._read_script(keys=self.script_keys(), args=[self.retention_ms()])
        self._adopt_reply(list(reply), asked)
        return self.snapshot

    def _adopt_reply(self, reply: list[Any], asked: set[str] | None = None) -> None:
        version = int(reply[0])
        rows = [_member(orjson.loads(raw)) for raw in reply[1:]]
        for member in rows:
            if member.state in GONE_STATES:
                self._remember_gone(member.incarnation)
        known = {member.incarnation for member in rows}
        for incarnation in asked or ():
            if incarnation not in known:  # pruned: it was dead or left before this read
                self._remember_gone(incarnation)
        others = tuple(m for m in rows if m.incarnation != self.incarnation)
        # This silo's own entry reflects what it knows first-hand (leaving, fenced).
        self._adopt(MembershipSnapshot(version, (*others, self.me()), self._keys.cluster))

    def _remember_gone(self, incarnation: str) -> None:
        self._gone[incarnation] = None
        if len(self._gone) > GONE_MEMORY:
            self._gone.popitem(last=False)

    def _adopt(self, snapshot: MembershipSnapshot) -> None:
        if snapshot.version < self.snapshot.version:
            return
        changed = snapshot.version != self.snapshot.version or snapshot != self.snapshot
        self.snapshot = snapshot
        self.ring = PlacementRing(snapshot)
        self._metrics.membership_version.set(snapshot.version)
        for state in (ACTIVE, LEAVING, DEAD, LEFT):
            self._metrics.members.labels(state).set(
                sum(1 for m in snapshot.members if m.state == state)
            )
        if changed:
            self._metrics.membership_changes.inc()
            for listener in self._listeners:
                listener(snapshot)

    async def _rejoin_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.heartbeat_interval)
            if self.state == FENCED:
                await self._try_rejoin()

    async def _watch_changes(self) -> None:
        """Pub/sub: adopt a change as soon as it is published, not at the next heartbeat.
        Polling in the heartbeat thread stays the safety net when a message is missed.
        Messages are polled with a timeout (never a blocking ``listen()``), so stopping
        this task never waits on the socket."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._keys.members_channel)
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.timing.heartbeat_interval
                    )
                    if message is None or self.state in GONE_STATES:
                        continue
                    if int(message.get("data") or 0) > self.snapshot.version:
                        await asyncio.wait_for(self.refresh(), self.timing.heartbeat_interval)
            except (RedisError, OSError, asyncio.TimeoutError, ValueError):
                await asyncio.sleep(self.timing.heartbeat_interval)
            finally:
                with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    async def _try_rejoin(self) -> None:
        """A fenced silo comes back as a new incarnation once Redis answers again."""
        if not self.rejoin_gate():
            return
        try:
            await asyncio.wait_for(self._join(), timeout=self.timing.heartbeat_interval * 2)
        except (RedisError, OSError, asyncio.TimeoutError):
            return
        log.info("rejoined after fencing as %s", self.incarnation)
        self._notify(self._on_rejoined)


def _member(record: dict[str, object]) -> MemberInfo:
    return MemberInfo(
        silo_id=str(record.get("silo_id", "")),
        address=str(record.get("address", "")),
        state=str(record.get("state", DEAD)),
        started_at=float(record.get("started_at", 0.0)),  # type: ignore[arg-type]
        incarnation=str(record.get("incarnation", "")),
    )
