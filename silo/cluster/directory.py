"""The grain directory in Redis: which activation owns a grain, fenced by an activation id.

Placement only suggests a silo; this directory decides, with one atomic
compare-and-set per activation. Invariants:
- ``register`` succeeds only if the entry is absent, already names this silo
  incarnation (a leftover of its own), or names the incarnation the caller
  proved dead; every success writes a fresh, unique activation id (Redis time,
  so ids of one grain sort in registration order, which only tests rely on,
  plus a random nonce, which makes it unique even if that clock steps back);
- ``unregister`` deletes the entry only if it still names the same activation id,
  so deactivation leaves no key behind;
- the activation id is checked on every state write (see :mod:`silo.storage`), so a
  superseded activation can never write. Nothing needs to survive between two
  activations: a new one always gets a new id, whatever the old one held.
- every registration first adds the grain to its silo incarnation's index
  (:meth:`KeySpace.registered_by`), so the entries of a silo that died are found
  and swept (:meth:`RedisGrainDirectory.sweep`) without scanning the keyspace.
Registration also returns the grain's stored state (same hash slot), so a cold
activation costs one Redis round trip.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.errors import StorageUnavailableError
from grainery.client.routing import GrainId
from grainery.client.tasks import spawn
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage.keys import KeySpace
from grainery.silo.storage.redis_state import Fence, StoredState
from grainery.silo.tracing import traced_grain_op

# KEYS: dir, state. ARGV: incarnation, silo_id, address, dead incarnation ('' = none), nonce.
_REGISTER = """
local cur = redis.call('HMGET', KEYS[1], 'inc', 'silo', 'address', 'act')
if cur[1] and cur[1] ~= ARGV[1] and cur[1] ~= ARGV[4] then
  return {0, cur[1], cur[2] or '', cur[3] or '', cur[4] or '', false, false}
end
local t = redis.call('TIME')
local act = string.format('%010d%06d', tonumber(t[1]), tonumber(t[2])) .. '-' .. ARGV[5]
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'inc', ARGV[1], 'silo', ARGV[2], 'address', ARGV[3], 'act', act)
local state = redis.call('HMGET', KEYS[2], 'data', 'etag')
return {1, ARGV[1], ARGV[2], ARGV[3], act, state[1], state[2]}
"""

# KEYS: dir. ARGV: field ('act' or 'inc'), value. Deletes the entry if that field matches.
_DELETE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

SWEEP_CHUNK = 500


@dataclass(frozen=True)
class DirectoryEntry:
    incarnation: str
    silo_id: str
    address: str
    activation: str  # the activation id: the fencing token of state writes


@dataclass(frozen=True)
class Registration:
    won: bool
    entry: DirectoryEntry
    state: StoredState | None  # loaded state when won

    @property
    def fence(self) -> Fence:
        return Fence(self.entry.incarnation, self.entry.activation)


def _text(value: object) -> str:
    if value is None or value is False:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def index_member(grain: GrainId) -> str:
    return orjson.dumps([grain.grain_type, grain.key]).decode()


def new_nonce() -> str:
    return secrets.token_hex(8)


# (registrants key, incarnation, index key, member): what a registration adds to its index.
Index = tuple[str, str, str, str]
_Item = tuple[list[str], list[str], Index | None, "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs concurrent calls of one Lua script as a single pipeline per event-loop turn.

    Why: a burst of cold activations (a thousand agents waking up) would otherwise cost a
    Redis round trip and a socket write each; batched, they share one. Each call still runs
    its script atomically and gets its own reply or error; nothing waits for a timer.
    A call may name an :data:`Index`: the pipeline adds the member (and the incarnation to
    the registrants) *before* the scripts run, so an entry never exists unindexed.
    """

    MAX_BATCH = 256

    def __init__(self, redis: aioredis.Redis, script: Any) -> None:
        self._redis = redis
        self._script = script
        self._queue: list[_Item] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(
        self, keys: list[str], args: list[str], index: Index | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, index, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        while self._queue:
            batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
            spawn(self._send(batch), name="grainery-directory-batch", owner=self._sending)

    async def _send(self, batch: list[_Item]) -> None:
        try:
            indexes: dict[tuple[str, str, str], list[str]] = {}
            for _, _, index, _ in batch:
                if index is not None:
                    indexes.setdefault(index[:3], []).append(index[3])
            if len(batch) == 1 and not indexes:
                keys, args, _, future = batch[0]
                result = await self._script(keys=keys, args=args)
                if not future.done():
                    future.set_result(result)
                return
            pipe = self._redis.pipeline(transaction=False)
            for (registrants, incarnation, index_key), members in indexes.items():
                pipe.sadd(registrants, incarnation)
                pipe.sadd(index_key, *members)
            for keys, args, _, _ in batch:
                await self._script(keys=keys, args=args, client=pipe)  # queues an EVALSHA
            replies = (await pipe.execute(raise_on_error=False))[2 * len(indexes) :]
            if len(replies) != len(batch):
                raise RuntimeError(f"pipeline returned {len(replies)} replies for {len(batch)}")
        except asyncio.CancelledError:
            # The silo is stopping: the waiting calls are cancelled too, and so is this task
            # (a swallowed cancellation would make stop() wait on a task that claims success).
            for _, _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting call gets the failure
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)


class RedisGrainDirectory:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, metrics: SiloMetrics) -> None:
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._register = ScriptBatcher(redis, redis.register_script(_REGISTER))
        self._delete_if = redis.register_script(_DELETE_IF)

    @traced_grain_op("grainery.directory.register")
    async def register(
        self, grain: GrainId, incarnation: str, silo_id: str, address: str, dead: str = ""
    ) -> Registration:
        """Claim ``grain`` for a new activation, or learn who holds it."""
        keys = [self._keys.directory(grain), self._keys.state(grain)]
        index = (
            self._keys.indexed_incarnations, incarnation, self._keys.registered_by(incarnation),
            index_member(grain),
        )
        started = time.perf_counter()
        try:
            reply = await self._register(
                keys=keys, args=[incarnation, silo_id, address, dead, new_nonce()], index=index
            )
        except RedisError as exc:
            self._metrics.directory_op("register", "error")
            raise StorageUnavailableError(
                f"directory unavailable while activating {grain}: {type(exc).__name__}"
            ) from exc
        won = int(reply[0]) == 1
        entry = DirectoryEntry(*(_text(v) for v in reply[1:5]))
        self._metrics.directory_op("register", "ok" if won else "conflict")
        state = None
        if won:
            state = StoredState.decode(reply[5] or None, reply[6] or None)
            self._metrics.storage_op("read", "ok", started)
        return Registration(won, entry, state)

    @traced_grain_op("grainery.directory.lookup")
    async def lookup(self, grain: GrainId) -> DirectoryEntry | None:
        try:
            values = await self._redis.hmget(
                self._keys.directory(grain), ["inc", "silo", "address", "act"]
            )
        except RedisError as exc:
            self._metrics.directory_op("lookup", "error")
            raise StorageUnavailableError(
                f"directory unavailable while locating {grain}: {type(exc).__name__}"
            ) from exc
        self._metrics.directory_op("lookup", "ok")
        if not values[0]:
            return None
        return DirectoryEntry(*(_text(v) for v in values))

    @traced_grain_op("grainery.directory.unregister")
    async def unregister(self, grain: GrainId, fence: Fence) -> bool:
        """Delete the entry if it still names ``fence``'s activation, and unindex it."""
        pipe = self._redis.pipeline(transaction=False)
        await self._delete_if(
            keys=[self._keys.directory(grain)], args=["act", fence.activation], client=pipe
        )
        pipe.srem(self._keys.registered_by(fence.incarnation), index_member(grain))
        try:
            removed, _ = await pipe.execute()
        except RedisError:
            self._metrics.directory_op("unregister", "error")
            raise
        self._metrics.directory_op("unregister", "ok" if removed else "conflict")
        return bool(removed)

    async def registrants(self) -> list[str]:
        """Incarnations that may still hold entries (each has an index)."""
        members = await self._redis.smembers(self._keys.indexed_incarnations)
        return sorted(_text(m) for m in members)

    async def sweep(self, incarnation: str) -> int:
        """Delete every entry the *dead* ``incarnation`` still holds, then its index.
        Only entries naming that incarnation go, so a grain already taken over is untouched;
        running it twice, or on two silos at once, is harmless."""
        index_key = self._keys.registered_by(incarnation)
        removed = 0
        while True:
            # Read, delete, then unindex: a sweep cut short leaves the rest indexed.
            members = await self._redis.srandmember(index_key, SWEEP_CHUNK)
            if not members:
                break
            pipe = self._redis.pipeline(transaction=False)
            for raw in members:
                grain_type, key = orjson.loads(_text(raw))
                await self._delete_if(
                    keys=[self._keys.directory(GrainId(grain_type, key))],
                    args=["inc", incarnation], client=pipe,
                )
            pipe.srem(index_key, *members)
            removed += sum(int(r) for r in (await pipe.execute())[:-1])
        await self._redis.srem(self._keys.indexed_incarnations, incarnation)
        self._metrics.directory_op("sweep", "ok")
        return removed
