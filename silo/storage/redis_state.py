"""Grain state in Redis: JSON plus an ETag, written by compare-and-set.

Invariant: a write lands only if (1) the grain's directory entry still names this
activation (its activation id, the fencing token) and (2) the stored ETag is the
one this activation last saw. One Lua script checks both atomically, so a stale
writer gets an error instead of overwriting, and an activation that was superseded
can never write again.

Why an old ETag can never match again, although nothing per grain outlives its data
(clearing deletes the state key, deactivation deletes the directory entry):
- every ETag is ``<activation id>:<n>``, where the activation id is unique (Redis
  time plus a random nonce, see :mod:`silo.cluster.directory`) and ``n`` counts the
  writes of that activation in its directory entry, so no two writes ever produce
  the same ETag;
- only the activation named in the directory entry can write at all (check 1), so
  an ETag held by any earlier activation is moot;
- within one activation, after a clear the state key is gone but the directory
  entry remembers the ETag of the clear (``cleared``) and that is the version a
  writer must name; the "nothing stored" version ``""`` therefore exists only
  until the activation's first write and never comes back while it lives (no ABA).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.errors import ActivationFencedError, StaleStateError, StorageUnavailableError
from grainery.client.routing import GrainId
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage.keys import KeySpace
from grainery.silo.storage.pool import NotSentError
from grainery.silo.storage.state_codec import EMPTY, decode_state
from grainery.silo.tracing import traced_grain_op

# KEYS: state, dir. ARGV: expected etag, data ('' = clear), activation id.
_WRITE = """
local owner = redis.call('HGET', KEYS[2], 'act')
if owner ~= ARGV[3] then
  return {'fenced', owner or ''}
end
local current = redis.call('HGET', KEYS[1], 'etag') or redis.call('HGET', KEYS[2], 'cleared') or ''
if current ~= ARGV[1] then
  return {'stale', current}
end
local nxt = ARGV[3] .. ':' .. redis.call('HINCRBY', KEYS[2], 'n', 1)
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'cleared', nxt)
else
  redis.call('HSET', KEYS[1], 'data', ARGV[2], 'etag', nxt)
end
return {'ok', nxt}
"""

# KEYS: state, dir. The version of absent state is the clear's ETag while its activation lives.
_READ = """
local s = redis.call('HMGET', KEYS[1], 'data', 'etag')
if not s[2] then s[2] = redis.call('HGET', KEYS[2], 'cleared') end
return s
"""


def _text(value: object) -> str:
    if value is None or value is False:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class StoredState:
    """Stored state as read: the decoded dict, its ETag, and the raw JSON bytes (kept by the
    activation as the last persisted version, to restore after a failed turn)."""

    data: dict[str, Any]
    etag: str
    raw: bytes = field(default=EMPTY, repr=False)

    @classmethod
    def decode(cls, raw: bytes | str | None, etag: bytes | str | None) -> StoredState:
        payload = (raw.encode() if isinstance(raw, str) else raw) or EMPTY
        return cls(decode_state(payload), _text(etag), payload)


@dataclass(frozen=True)
class Fence:
    """The activation a write must come from: its silo incarnation and activation id."""

    incarnation: str
    activation: str


class RedisGrainStorage:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, metrics: SiloMetrics) -> None:
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._write = redis.register_script(_WRITE)
        self._read = redis.register_script(_READ)

    @traced_grain_op("grainery.state.read")
    async def read(self, grain: GrainId) -> StoredState:
        started = time.perf_counter()
        try:
            raw, etag = await self._read(
                keys=[self._keys.state(grain), self._keys.directory(grain)]
            )
        except RedisError as exc:
            self._metrics.storage_op("read", "error", started)
            raise StorageUnavailableError(f"state store unavailable: {type(exc).__name__}") from exc
        self._metrics.storage_op("read", "ok", started)
        return StoredState.decode(raw or None, etag or None)

    @traced_grain_op("grainery.state.write")
    async def write(self, grain: GrainId, payload: bytes, etag: str, fence: Fence) -> str:
        """Store ``payload`` (from :func:`silo.state_codec.encode_state`; empty means nothing
        stored, which deletes the key) if nothing changed since ``etag``; returns the new
        ETag."""
        return await self._compare_and_set(grain, payload, etag, fence, "write")

    @traced_grain_op("grainery.state.clear")
    async def clear(self, grain: GrainId, etag: str, fence: Fence) -> str:
        return await self._compare_and_set(grain, EMPTY, etag, fence, "clear")

    async def _compare_and_set(
        self, grain: GrainId, payload: bytes, etag: str, fence: Fence, operation: str
    ) -> str:
        started = time.perf_counter()
        keys = [self._keys.state(grain), self._keys.directory(grain)]
        try:
            verdict, value = await self._write(keys=keys, args=[etag, payload, fence.activation])
        except RedisError as exc:
            self._metrics.storage_op(operation, "error", started)
            applied = "was not applied" if isinstance(exc, NotSentError) else (
                "may or may not have been applied")
            raise StorageUnavailableError(
                f"state store unavailable during {operation} of {grain}: {type(exc).__name__}"
                f" (the write {applied})"
            ) from exc
        verdict = _text(verdict)
        if verdict == "ok":
            self._metrics.storage_op(operation, "ok", started)
            return _text(value)
        self._metrics.storage_op(operation, verdict, started)
        if verdict == "fenced":
            raise ActivationFencedError(
                f"state {operation} of {grain} refused: a newer activation owns the grain"
            )
        raise StaleStateError(
            f"stale state {operation} of {grain}: stored version changed since it was read"
        )
