"""Grain state in Redis: JSON plus a version (ETag), written by compare-and-set.

Invariant: a write lands only if (1) the stored ETag is the one this activation
last saw, and (2) the grain's directory entry still names this activation (its
silo incarnation and epoch). Both are checked by one Lua script, atomically,
so a stale writer gets an error instead of overwriting, and an activation that
was superseded elsewhere can never write again. The ETag only grows (clearing
keeps counting), so an old ETag can never match again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.errors import ActivationFencedError, StaleStateError, StorageUnavailableError
from grainery.client.routing import GrainId
from grainery.silo.keys import KeySpace
from grainery.silo.metrics import SiloMetrics

# KEYS: state, dir. ARGV: expected etag, data ('' = clear), incarnation, epoch.
_WRITE = """
local owner = redis.call('HMGET', KEYS[2], 'inc', 'epoch')
if owner[1] ~= ARGV[3] or owner[2] ~= ARGV[4] then
  return {'fenced', owner[1] or ''}
end
local current = redis.call('HGET', KEYS[1], 'etag') or ''
if current ~= ARGV[1] then
  return {'stale', current}
end
local nxt = tostring((tonumber(current) or 0) + 1)
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'data')
  redis.call('HSET', KEYS[1], 'etag', nxt)
else
  redis.call('HSET', KEYS[1], 'data', ARGV[2], 'etag', nxt)
end
return {'ok', nxt}
"""


@dataclass
class StoredState:
    data: dict[str, Any]
    etag: str

    @classmethod
    def decode(cls, raw: bytes | str | None, etag: bytes | str | None) -> StoredState:
        data = orjson.loads(raw) if raw else {}
        if not isinstance(data, dict):
            data = {"value": data}
        if isinstance(etag, bytes):
            etag = etag.decode()
        return cls(data, etag or "")


@dataclass(frozen=True)
class Fence:
    """The activation a write must come from."""

    incarnation: str
    epoch: str


class RedisGrainStorage:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, metrics: SiloMetrics) -> None:
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._write = redis.register_script(_WRITE)

    async def read(self, grain: GrainId) -> StoredState:
        started = time.perf_counter()
        try:
            raw, etag = await self._redis.hmget(self._keys.state(grain), ["data", "etag"])
        except RedisError as exc:
            self._metrics.storage_op("read", "error", started)
            raise StorageUnavailableError(f"state store unavailable: {type(exc).__name__}") from exc
        self._metrics.storage_op("read", "ok", started)
        return StoredState.decode(raw, etag)

    async def write(self, grain: GrainId, data: dict[str, Any], etag: str, fence: Fence) -> str:
        """Store ``data`` if nothing changed since ``etag``; returns the new ETag."""
        try:
            payload = orjson.dumps(data).decode()
        except TypeError as exc:
            raise TypeError(f"grain state is not JSON-serialisable: {exc}") from None
        return await self._compare_and_set(grain, payload, etag, fence, "write")

    async def clear(self, grain: GrainId, etag: str, fence: Fence) -> str:
        return await self._compare_and_set(grain, "", etag, fence, "clear")

    async def _compare_and_set(
        self, grain: GrainId, payload: str, etag: str, fence: Fence, operation: str
    ) -> str:
        started = time.perf_counter()
        keys = [self._keys.state(grain), self._keys.directory(grain)]
        try:
            verdict, value = await self._write(
                keys=keys, args=[etag, payload, fence.incarnation, fence.epoch]
            )
        except RedisError as exc:
            self._metrics.storage_op(operation, "error", started)
            raise StorageUnavailableError(
                f"state store unavailable during {operation} of {grain}: {type(exc).__name__}"
                " (the write may or may not have been applied)"
            ) from exc
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        if verdict == "ok":
            self._metrics.storage_op(operation, "ok", started)
            return value.decode() if isinstance(value, bytes) else str(value)
        self._metrics.storage_op(operation, verdict, started)
        if verdict == "fenced":
            raise ActivationFencedError(
                f"state {operation} of {grain} refused: a newer activation owns the grain"
            )
        raise StaleStateError(
            f"stale state {operation} of {grain}: stored version changed since it was read"
        )
