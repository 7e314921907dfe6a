"""A grain's journal in Redis: an append-only stream with sequence numbers, fenced.

Layout (both keys carry the grain's hash tag, like its state and directory entry):
- ``...:journal``: a Redis Stream; entry ``<seq>-0`` holds ``k`` (kind), ``d`` (JSON data)
  and ``t`` (milliseconds since the epoch, the silo's clock);
- ``...:journal:index``: a hash: ``seq`` (the last sequence number handed out) and the
  *open marks*: ``run:<seq>`` (a durable run that has not ended), ``sig:<seq>`` (a signal
  not yet consumed by a wait) and ``cancel:<seq>`` (a cancellation not yet seen by its run).
- ``...:journal:signal-ids``: a sorted set of the ids of the latest SIGNAL_IDS_KEPT signals,
  scored by their entry's seq: an append that carries a known id (a client's retry of a
  signal whose answer it never saw) appends nothing and answers the first one's seq.

Fencing: one Lua script checks that the grain's directory entry still names the appending
activation and only then appends, so an activation that was superseded (its silo died or
fenced itself, and the grain lives elsewhere now) can never add an entry; the same script
updates the index, so an entry and its mark are never one without the other.

Retention (the documented policy): a grain keeps at most ``max_entries`` entries (the class
attribute ``Grain.journal_max_entries``). When an append goes past it, the oldest entries are
trimmed, but never an entry at or after the oldest open mark: an unfinished run is always
replayable and a buffered signal is never lost, even if that keeps the journal longer than
the bound for a while. Sequence numbers are never reused; trimmed entries are gone for
readers too (``read`` starts at the oldest kept entry).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client.errors import ActivationFencedError, StorageUnavailableError
from grainery.client.routing import GrainId
from grainery.silo.storage.keys import KeySpace
from grainery.silo.storage.pool import NotSentError

# KEYS: journal, index, dir, signal ids. ARGV: activation id, kind, data, time ms, max
# entries, mark prefix to set at the new seq ('' none), mark value, marks to delete
# (space-separated), the entry's once-only id ('' none), how many such ids to keep.
_APPEND = """
local owner = redis.call('HGET', KEYS[3], 'act')
if owner ~= ARGV[1] then
  return {'fenced', owner or ''}
end
if ARGV[9] ~= '' then
  local first = redis.call('ZSCORE', KEYS[4], ARGV[9])
  if first then
    return {'seen', first}
  end
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('XADD', KEYS[1], seq .. '-0', 'k', ARGV[2], 'd', ARGV[3], 't', ARGV[4])
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[4], seq, ARGV[9])
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[10]) - 1)
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[6] .. seq, ARGV[7])
end
for field in string.gmatch(ARGV[8], '%S+') do
  redis.call('HDEL', KEYS[2], field)
end
local max = tonumber(ARGV[5])
if redis.call('XLEN', KEYS[1]) > max then
  local floor = seq - max + 1
  local marks = redis.call('HKEYS', KEYS[2])
  for _, field in ipairs(marks) do
    local prefix = string.sub(field, 1, 4)
    if prefix == 'run:' or prefix == 'sig:' then
      local at = tonumber(string.sub(field, 5))
      if at and at < floor then floor = at end
    end
  end
  redis.call('XTRIM', KEYS[1], 'MINID', floor .. '-0')
end
return {'ok', seq}
"""

MAX_READ = 1000  # entries per read: a reader pages with ``after``
SIGNAL_IDS_KEPT = 1000  # per grain: a retry must come within the grain's next 1000 signals


@dataclass(frozen=True)
class JournalEntry:
    """One journal entry as read: its sequence number, kind, decoded data, and when it was
    appended (milliseconds since the epoch, by the appending silo's clock)."""

    seq: int
    kind: str
    data: Any
    time_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "data": self.data, "time_ms": self.time_ms}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


MAX_ENTRY_BYTES = 1024 * 1024  # an entry's JSON data: a journal is an audit trail, not a store


def encode_data(data: Any) -> str:
    """Journal data is JSON of at most MAX_ENTRY_BYTES; anything else is a TypeError (not
    JSON) or ValueError (too large) naming the problem."""
    try:
        text = orjson.dumps(data)
    except TypeError as exc:
        raise TypeError(f"journal data must be JSON-serialisable: {exc}") from None
    if len(text) > MAX_ENTRY_BYTES:
        raise ValueError(f"journal data is {len(text)} bytes of JSON; the limit is "
                         f"{MAX_ENTRY_BYTES}")
    return text.decode()


class RedisJournalStore:
    """Appends (fenced) and reads of every grain's journal on one silo."""

    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._append = redis.register_script(_APPEND)

    async def append(
        self, grain: GrainId, activation: str, kind: str, data_json: str, max_entries: int,
        mark: str = "", mark_value: str = "", unmark: tuple[str, ...] = (),
    ) -> int:
        """Append one entry as ``activation``; returns its sequence number. ``mark``: an
        index prefix (``run:``, ``sig:``, ``cancel:``) to set at the new sequence number;
        ``unmark``: index fields to delete in the same step."""
        seq, _appended = await self.append_once(grain, activation, kind, data_json,
                                                max_entries, mark, mark_value, unmark)
        return seq

    async def append_once(
        self, grain: GrainId, activation: str, kind: str, data_json: str, max_entries: int,
        mark: str = "", mark_value: str = "", unmark: tuple[str, ...] = (), once_id: str = "",
    ) -> tuple[int, bool]:
        """``append``, unless ``once_id`` names one of the grain's latest signals: then
        nothing is written. Returns (the entry's seq, whether this call appended it)."""
        keys = [self._keys.journal(grain), self._keys.journal_index(grain),
                self._keys.directory(grain), self._keys.journal_signal_ids(grain)]
        args: list[str | int] = [activation, kind, data_json, int(time.time() * 1000),
                                 max_entries, mark, mark_value, " ".join(unmark), once_id,
                                 SIGNAL_IDS_KEPT]
        try:
            verdict, value = await self._append(keys=keys, args=args)
        except RedisError as exc:
            applied = "was not applied" if isinstance(exc, NotSentError) else (
                "may or may not have been applied")
            raise StorageUnavailableError(
                f"journal store unavailable during an append to {grain}: "
                f"{type(exc).__name__} (the append {applied})"
            ) from exc
        if _text(verdict) == "fenced":
            raise ActivationFencedError(
                f"journal append to {grain} refused: a newer activation owns the grain"
            )
        return int(value), _text(verdict) == "ok"

    async def read(self, grain: GrainId, after: int = 0, limit: int = 100) -> list[JournalEntry]:
        """Entries with ``seq > after``, oldest first, at most ``limit`` (<= MAX_READ)."""
        count = max(1, min(int(limit), MAX_READ))
        try:
            rows = await self._redis.xrange(
                self._keys.journal(grain), min=f"{max(0, int(after)) + 1}-0", count=count
            )
        except RedisError as exc:
            raise StorageUnavailableError(
                f"journal store unavailable reading {grain}: {type(exc).__name__}"
            ) from exc
        return [_entry(entry_id, fields) for entry_id, fields in rows or ()]

    async def last(self, grain: GrainId, count: int) -> list[JournalEntry]:
        """The newest ``count`` entries, newest first."""
        try:
            rows = await self._redis.xrevrange(self._keys.journal(grain), count=count)
        except RedisError as exc:
            raise StorageUnavailableError(
                f"journal store unavailable reading {grain}: {type(exc).__name__}"
            ) from exc
        return [_entry(entry_id, fields) for entry_id, fields in rows or ()]

    async def index(self, grain: GrainId) -> dict[str, str]:
        """The journal's index (``seq`` and the open marks)."""
        try:
            raw = await self._redis.hgetall(self._keys.journal_index(grain))
        except RedisError as exc:
            raise StorageUnavailableError(
                f"journal store unavailable reading {grain}: {type(exc).__name__}"
            ) from exc
        return {_text(k): _text(v) for k, v in raw.items()}


def _entry(entry_id: Any, fields: Any) -> JournalEntry:
    values = {_text(k): v for k, v in (fields or {}).items()}
    data = values.get("d")
    return JournalEntry(
        int(_text(entry_id).split("-", 1)[0]), _text(values.get("k", b"")),
        orjson.loads(data) if data else None, int(_text(values.get("t", b"0")) or 0),
    )
