"""The grain directory in Redis: which activation (silo incarnation + epoch) owns a grain.

Placement only suggests a silo; this directory decides, with one atomic
compare-and-set per activation. Invariants:
- ``register`` succeeds only if the entry is empty, already names this silo
  incarnation (a leftover of its own), or names the incarnation the caller
  proved dead; every success takes a fresh, strictly larger epoch;
- ``unregister`` only removes an entry that still names the same activation;
- the epoch is checked on every state write (see :mod:`silo.storage`), so a
  superseded activation can never write.
Registration also returns the grain's stored state (same hash slot), so a cold
activation costs one Redis round trip.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.errors import StorageUnavailableError
from grainery.client.routing import GrainId
from grainery.client.tasks import spawn
from grainery.silo.keys import KeySpace
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage import StoredState

# KEYS: dir, state. ARGV: incarnation, silo_id, address, dead incarnation ('' = none).
_REGISTER = """
local cur = redis.call('HMGET', KEYS[1], 'inc', 'silo', 'address', 'epoch')
if cur[1] and cur[1] ~= ARGV[1] and cur[1] ~= ARGV[4] then
  return {0, cur[1], cur[2] or '', cur[3] or '', cur[4] or '', false, false}
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'inc', ARGV[1], 'silo', ARGV[2], 'address', ARGV[3])
local state = redis.call('HMGET', KEYS[2], 'data', 'etag')
return {1, ARGV[1], ARGV[2], ARGV[3], tostring(epoch), state[1], state[2]}
"""

# KEYS: dir. ARGV: incarnation, epoch.
_UNREGISTER = """
local cur = redis.call('HMGET', KEYS[1], 'inc', 'epoch')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'inc', 'silo', 'address')
  return 1
end
return 0
"""


@dataclass(frozen=True)
class DirectoryEntry:
    incarnation: str
    silo_id: str
    address: str
    epoch: str


@dataclass(frozen=True)
class Registration:
    won: bool
    entry: DirectoryEntry
    state: StoredState | None  # loaded state when won


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


class ScriptBatcher:
    """Runs concurrent calls of one Lua script as a single pipeline per event-loop turn.

    Why: a burst of cold activations (a thousand agents waking up) would otherwise cost a
    Redis round trip and a socket write each; batched, they share one. Each call still runs
    its script atomically and gets its own reply or error; nothing waits for a timer.
    """

    MAX_BATCH = 256

    def __init__(self, redis: aioredis.Redis, script: Any) -> None:
        self._redis = redis
        self._script = script
        self._queue: list[tuple[list[str], list[str], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: list[str], args: list[str]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        while self._queue:
            batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
            spawn(self._send(batch), name="grainery-directory-batch", owner=self._sending)

    async def _send(self, batch: list[tuple[list[str], list[str], asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                keys, args, future = batch[0]
                result = await self._script(keys=keys, args=args)
                if not future.done():
                    future.set_result(result)
                return
            pipe = self._redis.pipeline(transaction=False)
            for keys, args, _ in batch:
                await self._script(keys=keys, args=args, client=pipe)  # queues an EVALSHA
            replies = await pipe.execute(raise_on_error=False)
            if len(replies) != len(batch):
                raise RuntimeError(f"pipeline returned {len(replies)} replies for {len(batch)}")
        except asyncio.CancelledError:
            # The silo is stopping: the waiting calls are cancelled too, and so is this task
            # (a swallowed cancellation would make stop() wait on a task that claims success).
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting call gets the failure
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
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
        self._unregister = redis.register_script(_UNREGISTER)

    async def register(
        self, grain: GrainId, incarnation: str, silo_id: str, address: str, dead: str = ""
    ) -> Registration:
        """Claim ``grain`` for this activation, or learn who holds it."""
        keys = [self._keys.directory(grain), self._keys.state(grain)]
        started = time.perf_counter()
        try:
            reply = await self._register(keys=keys, args=[incarnation, silo_id, address, dead])
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

    async def lookup(self, grain: GrainId) -> DirectoryEntry | None:
        try:
            values = await self._redis.hmget(
                self._keys.directory(grain), ["inc", "silo", "address", "epoch"]
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

    async def unregister(self, grain: GrainId, incarnation: str, epoch: str) -> bool:
        try:
            removed = await self._unregister(
                keys=[self._keys.directory(grain)], args=[incarnation, epoch]
            )
        except RedisError:
            self._metrics.directory_op("unregister", "error")
            raise
        self._metrics.directory_op("unregister", "ok" if removed else "conflict")
        return bool(removed)
