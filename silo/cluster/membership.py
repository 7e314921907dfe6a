"""Cluster membership in Redis: join, lease renewal, failure detection, self-fencing.

Invariants:
- Liveness is decided by Redis's clock alone: a member is dead once Redis time
  passes its lease, and a dead incarnation never comes back (heartbeats of a
  dead incarnation are refused; the silo must rejoin as a new incarnation).
- A silo stops serving *before* others may consider it dead: it trusts its
  lease only until ``sent + lease * (1 - max_drift) - margin`` on its own
  monotonic clock, where ``sent`` is when it sent the renewal that Redis
  accepted. Redis granted the lease no earlier than that instant, so with clock
  rates differing by less than ``max_drift`` the silo fences first.
- Every change bumps a version; silos poll it on each heartbeat and adopt
  newer snapshots, so they see changes within one heartbeat interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.routing import (
    ACTIVE,
    DEAD,
    LEAVING,
    MemberInfo,
    MembershipSnapshot,
    PlacementRing,
)
from grainery.silo.keys import KeySpace
from grainery.silo.metrics import SiloMetrics

log = logging.getLogger("grainery.membership")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: members, version, channel. ARGV: incarnation, record json, lease ms.
_JOIN = _NOW + """
local rec = cjson.decode(ARGV[2])
rec.state = 'active'
rec.lease_until = now + tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local other = cjson.decode(all[i + 1])
  if other.silo_id == rec.silo_id and other.state ~= 'dead' then
    other.state = 'dead'
    other.died_at = now
    redis.call('HSET', KEYS[1], all[i], cjson.encode(other))
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], version)
return version
"""

# KEYS: members, version, channel. ARGV: incarnation, lease ms, new state ('' = keep).
_RENEW = _NOW + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'dead', 0} end
local rec = cjson.decode(raw)
if rec.state == 'dead' or rec.lease_until < now then
  if rec.state ~= 'dead' then
    rec.state = 'dead'
    rec.died_at = now
    redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
    local v = redis.call('INCR', KEYS[2])
    redis.call('PUBLISH', KEYS[3], v)
  end
  return {'dead', 0}
end
rec.lease_until = now + tonumber(ARGV[2])
local changed = ARGV[3] ~= '' and ARGV[3] ~= rec.state
if changed then rec.state = ARGV[3] end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if changed then
  version = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', KEYS[3], version)
end
return {'ok', version}
"""

# KEYS: members, version, channel. ARGV: dead-entry retention ms.
_READ = _NOW + """
local all = redis.call('HGETALL', KEYS[1])
local changed = false
local out = {}
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  if rec.state ~= 'dead' and rec.lease_until < now then
    rec.state = 'dead'
    rec.died_at = now
    redis.call('HSET', KEYS[1], all[i], cjson.encode(rec))
    changed = true
  end
  if rec.state == 'dead' and now - (rec.died_at or now) > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(out, cjson.encode(rec))
  end
end
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if changed then
  version = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', KEYS[3], version)
end
table.insert(out, 1, tostring(version))
return out
"""

# KEYS: members, version, channel. ARGV: incarnation.
_LEAVE = _NOW + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
rec.state = 'dead'
rec.died_at = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], v)
return v
"""


@dataclass(frozen=True)
class MembershipTiming:
    heartbeat_interval: float = 1.0
    lease_duration: float = 4.0
    max_clock_drift: float = 0.01  # relative rate difference between silo and Redis clocks
    fence_margin: float = 0.25  # seconds of slack for event-loop lag
    dead_retention: float = 600.0

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
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        silo_id: str,
        address: str,
        timing: MembershipTiming,
        metrics: SiloMetrics,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.silo_id = silo_id
        self.address = address
        self.timing = timing
        self._metrics = metrics
        self.incarnation = ""
        self.state = "joining"
        self.started_at = time.time()
        self.snapshot = MembershipSnapshot(version=0, members=(), cluster=keys.cluster)
        self.ring = PlacementRing(self.snapshot)
        self._trusted_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[MembershipSnapshot], None]] = []
        self._on_fenced: list[Callable[[], None]] = []
        self._join_script = redis.register_script(_JOIN)
        self._renew_script = redis.register_script(_RENEW)
        self._read_script = redis.register_script(_READ)
        self._leave_script = redis.register_script(_LEAVE)
        self._refreshing: asyncio.Lock = asyncio.Lock()
        # Set by the runtime: a fenced silo rejoins only once no old turn is still running.
        self.rejoin_gate: Callable[[], bool] = lambda: True

    # ----- observers ------------------------------------------------------
    def on_change(self, listener: Callable[[MembershipSnapshot], None]) -> None:
        self._listeners.append(listener)

    def on_fenced(self, listener: Callable[[], None]) -> None:
        self._on_fenced.append(listener)

    @property
    def serving(self) -> bool:
        return self.state in (ACTIVE, LEAVING) and time.monotonic() < self._trusted_until

    def me(self) -> MemberInfo:
        return MemberInfo(self.silo_id, self.address, self.state, self.started_at, self.incarnation)

    def is_alive(self, incarnation: str) -> bool | None:
        """True/False from the current snapshot; None when the incarnation is unknown."""
        if incarnation == self.incarnation:
            return self.state != DEAD
        member = self.snapshot.by_incarnation(incarnation)
        if member is None:
            return None
        return member.state != DEAD

    # ----- lifecycle ------------------------------------------------------
    async def start(self) -> None:
        await self._join()
        self._task = asyncio.create_task(self._heartbeat_loop(), name="grainery-heartbeat")
        self._watch = asyncio.create_task(self._watch_changes(), name="grainery-membership-watch")

    async def set_leaving(self) -> None:
        """Stay alive (lease keeps renewing) but leave the placement ring."""
        self.state = LEAVING
        with contextlib.suppress(RedisError, OSError):
            await self._renew(LEAVING)
            await self.refresh()

    async def stop(self) -> None:
        for task in (self._task, self._watch):
            if task is not None:
                task.cancel()
                # Bounded: a task stuck in a socket call must not keep the silo from exiting.
                await asyncio.wait({task}, timeout=2.0)
        if self.incarnation:
            with contextlib.suppress(RedisError, OSError):
                await self._leave_script(keys=self._script_keys(), args=[self.incarnation])
        self.state = DEAD
        self._trusted_until = 0.0

    # ----- internals ------------------------------------------------------
    def _script_keys(self) -> list[str]:
        return [self._keys.members, self._keys.members_version, self._keys.members_channel]

    async def _join(self) -> None:
        self.incarnation = f"{self.silo_id}:{uuid.uuid4().hex[:12]}"
        self.started_at = time.time()
        record = {
            "silo_id": self.silo_id,
            "address": self.address,
            "started_at": self.started_at,
            "incarnation": self.incarnation,
        }
        sent = time.monotonic()
        await self._join_script(
            keys=self._script_keys(),
            args=[self.incarnation, orjson.dumps(record).decode(), self._lease_ms()],
        )
        self._trusted_until = sent + self.timing.trusted_for()
        self.state = ACTIVE
        log.info("joined cluster %s as %s", self._keys.cluster, self.incarnation)
        await self.refresh()

    def _lease_ms(self) -> int:
        return int(self.timing.lease_duration * 1000)

    async def _renew(self, new_state: str = "") -> int:
        sent = time.monotonic()
        verdict, version = await self._renew_script(
            keys=self._script_keys(), args=[self.incarnation, self._lease_ms(), new_state]
        )
        if (verdict.decode() if isinstance(verdict, bytes) else verdict) != "ok":
            self._fence("the cluster declared this silo dead")
            return -1
        self._trusted_until = sent + self.timing.trusted_for()
        return int(version)

    async def refresh(self) -> MembershipSnapshot:
        """Read the membership from Redis (declaring lapsed leases dead) and adopt it."""
        async with self._refreshing:
            reply = await self._read_script(
                keys=self._script_keys(), args=[int(self.timing.dead_retention * 1000)]
            )
            version = int(reply[0])
            others = tuple(
                member for member in (_member(orjson.loads(raw)) for raw in reply[1:])
                if member.incarnation != self.incarnation
            )
            # This silo's own entry reflects what it knows first-hand (e.g. leaving).
            members = (*others, self.me()) if self.state != DEAD else others
            self._adopt(MembershipSnapshot(version, members, self._keys.cluster))
            return self.snapshot

    def _adopt(self, snapshot: MembershipSnapshot) -> None:
        if snapshot.version < self.snapshot.version:
            return
        changed = snapshot.version != self.snapshot.version or snapshot != self.snapshot
        self.snapshot = snapshot
        self.ring = PlacementRing(snapshot)
        self._metrics.membership_version.set(snapshot.version)
        for state in (ACTIVE, LEAVING, DEAD):
            self._metrics.members.labels(state).set(
                sum(1 for m in snapshot.members if m.state == state)
            )
        if changed:
            self._metrics.membership_changes.inc()
            for listener in self._listeners:
                listener(snapshot)

    def _fence(self, why: str) -> None:
        if self.state == DEAD:
            return
        log.error("fencing: %s; this silo stops serving", why)
        self.state = DEAD
        self._trusted_until = 0.0
        for listener in self._on_fenced:
            listener()

    async def _heartbeat_loop(self) -> None:
        interval = self.timing.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            if self.state == DEAD:
                await self._try_rejoin()
                continue
            try:
                await asyncio.wait_for(self._renew(), timeout=interval)
                if self.state != DEAD:
                    # Reading also declares lapsed leases dead: this is failure detection.
                    await asyncio.wait_for(self.refresh(), timeout=interval)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("membership heartbeat failed: %s", type(exc).__name__)
            if self.state != DEAD and time.monotonic() >= self._trusted_until:
                self._fence("lease could not be renewed in time")

    async def _watch_changes(self) -> None:
        """Pub/sub: adopt a change as soon as it is published, not at the next heartbeat.
        Polling in the heartbeat loop stays the safety net when a message is missed.
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
                    if message is None or self.state == DEAD:
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


def _member(record: dict[str, object]) -> MemberInfo:
    return MemberInfo(
        silo_id=str(record.get("silo_id", "")),
        address=str(record.get("address", "")),
        state=str(record.get("state", DEAD)),
        started_at=float(record.get("started_at", 0.0)),  # type: ignore[arg-type]
        incarnation=str(record.get("incarnation", "")),
    )
