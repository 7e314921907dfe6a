"""The Redis Streams commands and scripts behind streams, in one place.

Why scripts: publishing must also record the stream in its partition's index (and ring the
partition's bell the first time, so its pump starts reading it) in one step; subscribing
must set the subscriber's starting position at the stream's end atomically with the
subscription; and a position may only move while the writer holds the partition's lease
(a pump that lost its lease must not move anything: the compare-and-set is in the script).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from grainery.silo.streams.names import StreamId, StreamKeys

Entry = tuple[str, str]  # (token, event JSON)

BELL_MAXLEN = 1000
DEAD_LETTERS_MAXLEN = 10_000
EVENT_FIELD = "e"

# Events of one partition, in order. KEYS: index, bell, then each event's stream. ARGV:
# maxlen, bell maxlen, then (stream name, event JSON) per event. Returns the tokens.
_PUBLISH = """
local tokens = {}
local rung = {}
for i = 3, #KEYS do
  local name = ARGV[2 * i - 3]
  tokens[i - 2] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2 * i - 2])
  if not rung[name] then
    rung[name] = true
    if redis.call('SADD', KEYS[1], name) == 1 then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 's', name)
    end
  end
end
return tokens
"""

_SUBSCRIBE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local position = '0-0'
if #last > 0 then position = last[1][1] end
redis.call('HSET', KEYS[2], ARGV[1], '1')
redis.call('HSET', KEYS[3], ARGV[1], position)
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', 's', ARGV[2])
return 1
"""

_UNSUBSCRIBE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 's', ARGV[2])
return 1
"""

# KEYS: lease, positions, subscribers. ARGV: incarnation, subscriber, token, explicit.
# -1: the lease is not ours (a superseded pump); 0: the explicit subscription is gone.
_ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_entries(raw: list[Any]) -> list[Entry]:
    entries: list[Entry] = []
    for token, fields in raw:
        event = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
        if event is not None:
            entries.append((_text(token), _text(event)))
    return entries


class StreamStore:
    """Streams' data in Redis: events, subscriptions, positions, leases, dead letters."""

    def __init__(self, redis: aioredis.Redis, keys: StreamKeys, maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self._publish = redis.register_script(_PUBLISH)
        self._subscribe = redis.register_script(_SUBSCRIBE)
        self._unsubscribe = redis.register_script(_UNSUBSCRIBE)
        self._advance = redis.register_script(_ADVANCE)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)

    # ----- events ---------------------------------------------------------
    async def publish(self, stream: StreamId, event_json: str) -> str:
        keys = self.keys
        partition = keys.partition(stream)
        tokens = await self._publish(
            keys=[keys.index(partition), keys.bell(partition), keys.events(stream)],
            args=[self.maxlen, BELL_MAXLEN, stream.name, event_json],
        )
        return _text(tokens[0])

    async def publish_many(self, events: list[tuple[StreamId, str]]) -> list[str]:
        """Append events in one round trip: one script call per partition (its keys share a
        hash slot), each appending its events in their order; the tokens, in input order.
        Order is kept within a stream (a stream lives in one partition)."""
        keys = self.keys
        groups: dict[int, list[int]] = {}
        for i, (stream, _) in enumerate(events):
            groups.setdefault(keys.partition(stream), []).append(i)
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition, members in groups.items():
                args: list[str | int] = [self.maxlen, BELL_MAXLEN]
                for i in members:
                    args += (events[i][0].name, events[i][1])
                await self._publish(
                    keys=[keys.index(partition), keys.bell(partition),
                          *(keys.events(events[i][0]) for i in members)],
                    args=args, client=pipe,
                )
            replies = await pipe.execute()
        tokens = [""] * len(events)
        for members, reply in zip(groups.values(), replies, strict=True):
            for i, token in zip(members, reply, strict=True):
                tokens[i] = _text(token)
        return tokens

    async def range_after(self, stream: StreamId, after: str, count: int) -> list[Entry]:
        """Up to ``count`` events with tokens after ``after`` ("0-0": from the oldest)."""
        raw: Any = await self.redis.xrange(self.keys.events(stream), f"({after}", "+",
                                           count=count)
        return decode_entries(raw)

    async def last_token(self, stream: StreamId) -> str:
        """The newest event's token, "0-0" for an empty stream."""
        raw = await self.redis.xrevrange(self.keys.events(stream), "+", "-", count=1)
        return _text(raw[0][0]) if raw else "0-0"

    async def trim_before(self, stream: StreamId, min_millis: int) -> int:
        return int(await self.redis.xtrim(
            self.keys.events(stream), minid=str(min_millis), approximate=True
        ))

    # ----- subscriptions and positions ------------------------------------
    async def subscribe(self, stream: StreamId, subscriber: str) -> bool:
        """Subscribe from the stream's end; False if already subscribed (nothing changes)."""
        keys = self.keys
        partition = keys.partition(stream)
        done = await self._subscribe(
            keys=[keys.events(stream), keys.subscribers(stream), keys.positions(stream),
                  keys.index(partition), keys.bell(partition)],
            args=[subscriber, stream.name, BELL_MAXLEN],
        )
        return bool(done)

    async def unsubscribe(self, stream: StreamId, subscriber: str) -> bool:
        keys = self.keys
        done = await self._unsubscribe(
            keys=[keys.subscribers(stream), keys.positions(stream),
                  keys.bell(keys.partition(stream))],
            args=[subscriber, stream.name, BELL_MAXLEN],
        )
        return bool(done)

    async def explicit_subscribers(self, stream: StreamId) -> list[str]:
        return [_text(f) for f in await self.redis.hkeys(self.keys.subscribers(stream))]

    async def positions(self, stream: StreamId) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.positions(stream))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def advance(
        self, stream: StreamId, subscriber: str, token: str, incarnation: str, explicit: bool,
    ) -> int:
        """Move ``subscriber``'s position to ``token`` if this silo still holds the
        partition's lease: 1 moved, 0 the explicit subscription is gone, -1 lease lost."""
        keys = self.keys
        result = await self._advance(
            keys=[keys.lease(keys.partition(stream)), keys.positions(stream),
                  keys.subscribers(stream)],
            args=[incarnation, subscriber, token, "1" if explicit else "0"],
        )
        return int(result)

    # ----- partitions -----------------------------------------------------
    async def streams_of(self, partition: int) -> list[StreamId]:
        names = await self.redis.smembers(self.keys.index(partition))
        return [StreamId.from_name(_text(n)) for n in names]

    async def hold_lease(self, partition: int, incarnation: str, millis: int) -> bool:
        """Take the partition's lease, or extend it if it is already ours."""
        return bool(await self._lease(keys=[self.keys.lease(partition)],
                                      args=[incarnation, millis]))

    async def hold_leases(self, partitions: list[int], incarnation: str, millis: int
                          ) -> list[bool]:
        """``hold_lease`` for several partitions in one round trip (the pump renews all of
        its leases together every quarter of a lease)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                await self._lease(keys=[self.keys.lease(partition)], args=[incarnation, millis],
                                  client=pipe)
            return [bool(held) for held in await pipe.execute()]

    async def release_lease(self, partition: int, incarnation: str) -> None:
        await self._release(keys=[self.keys.lease(partition)], args=[incarnation])

    # ----- dead letters ---------------------------------------------------
    async def dead_letter(
        self, stream: StreamId, subscriber: str, token: str, event_json: str, error: str,
    ) -> None:
        await self.redis.xadd(
            self.keys.dead_letters(stream.namespace),
            {"key": stream.key, "subscriber": subscriber, "token": token,
             "event": event_json, "error": error[:2000], "at": str(time.time())},
            maxlen=DEAD_LETTERS_MAXLEN, approximate=True,
        )

    async def dead_letters(self, namespace: str, count: int = 100) -> list[dict[str, str]]:
        raw: Any = await self.redis.xrange(self.keys.dead_letters(namespace), count=count)
        return [{_text(k): _text(v) for k, v in fields.items()} for _, fields in raw]

    async def bell_cursor(self, partition: int) -> str:
        """The newest note on the partition's bell ("0-0" if none)."""
        raw = await self.redis.xrevrange(self.keys.bell(partition), "+", "-", count=1)
        return _text(raw[0][0]) if raw else "0-0"
