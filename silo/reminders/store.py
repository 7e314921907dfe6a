"""Reminders in Redis: register, unregister, list one grain's; find and claim due ticks in a
set of partitions, and complete them. Every change is one Lua script (silo/reminders/scripts.py).

Cost when nothing is due: one ``EVALSHA`` (DUE_PARTITIONS, a range over the ``heads`` set of at
most ``partitions`` members) per poll of each silo, whatever the number of reminders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

from grainery.silo.cluster.partitions import partition_of
from grainery.silo.reminders import scripts
from grainery.silo.reminders.keys import ReminderKeys
from grainery.silo.reminders.model import (
    MAX_REMINDERS_PER_GRAIN,
    MAX_UNDELIVERABLE,
    RUNTIME_PREFIX,
    ReminderInfo,
    member_of,
)

PARTITIONS = 256  # fixed for a cluster's lifetime: every silo must use the same count


class ReminderLimitError(ValueError):
    """The grain already has MAX_REMINDERS_PER_GRAIN user reminders."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """One tick this silo claimed: deliver it, then ``complete`` it with the same values."""

    partition: int
    member: str
    scheduled_ms: str  # as stored (compared as text by COMPLETE)
    period_ms: int
    attempt: int

    @property
    def scheduled(self) -> float:
        return int(self.scheduled_ms) / 1000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ReminderStore:
    def __init__(self, redis: aioredis.Redis, cluster: str, partitions: int = PARTITIONS) -> None:
        self._redis = redis
        self.keys = ReminderKeys(cluster)
        self.partitions = partitions
        self._register = redis.register_script(scripts.REGISTER)
        self._unregister = redis.register_script(scripts.UNREGISTER)
        self._due = redis.register_script(scripts.DUE_PARTITIONS)
        self._claim = redis.register_script(scripts.CLAIM)
        self._complete = redis.register_script(scripts.COMPLETE)
        self._release = redis.register_script(scripts.RELEASE_DEAD)

    def partition(self, grain_type: str, key: str) -> int:
        return partition_of(f"{grain_type}/{key}", self.partitions)

    def _grain_keys(self, grain_type: str, key: str) -> tuple[int, list[str]]:
        p = self.partition(grain_type, key)
        k = self.keys
        return p, [k.due(p), k.defs(p), k.claims(p), k.heads, k.grain(p, grain_type, key)]

    # ----- definitions ----------------------------------------------------
    async def register(
        self, grain_type: str, key: str, name: str, due_ms: int, period_ms: int,
        limit: int = MAX_REMINDERS_PER_GRAIN,
    ) -> int:
        """Create or replace; returns the first due time (ms of the store's clock)."""
        p, keys = self._grain_keys(grain_type, key)
        runtime = "1" if name.startswith(RUNTIME_PREFIX) else "0"
        reply = await self._register(
            keys, [member_of(grain_type, key, name), name, due_ms, period_ms, limit, runtime, p]
        )
        if int(reply[0]) < 0:
            raise ReminderLimitError(
                f"{grain_type}/{key} already has {int(reply[1])} reminders (limit {limit} per "
                f"grain); unregister one first"
            )
        return int(reply[1])

    async def unregister(self, grain_type: str, key: str, name: str) -> bool:
        p, keys = self._grain_keys(grain_type, key)
        removed = await self._unregister(keys, [member_of(grain_type, key, name), name, p])
        return bool(int(removed))

    async def of_grain(self, grain_type: str, key: str) -> list[ReminderInfo]:
        _, keys = self._grain_keys(grain_type, key)
        names = sorted(_text(n) for n in await self._redis.smembers(keys[4]))
        if not names:
            return []
        members = [member_of(grain_type, key, n) for n in names]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(keys[1], members)
            pipe.zmscore(keys[0], members)
            pipe.hmget(keys[2], members)
            defs, scores, claims = await pipe.execute()
        out: list[ReminderInfo] = []
        for name, definition, score, claim in zip(names, defs, scores, claims, strict=True):
            if definition is None:
                continue  # unregistered between the two reads
            period, failures, disabled = _text(definition).split("|", 2)
            next_due = None if score is None else float(score) / 1000
            if claim is not None:
                next_due = int(_text(claim).split("|", 1)[0]) / 1000
            out.append(ReminderInfo(name, int(period) / 1000, None if disabled else next_due,
                                    claim is not None, int(failures), disabled))
        return out

    # ----- firing -----------------------------------------------------------
    async def due_partitions(self) -> list[int]:
        """Partitions with something due now (any owner's): one command."""
        reply = await self._due([self.keys.heads], [self.partitions])
        return [int(p) for p in reply[1:]]

    async def claim(
        self, partitions: Iterable[int], incarnation: str, lease_ms: int, limit: int
    ) -> list[Claimed]:
        """Claim up to ``limit`` due ticks in each partition: one pipelined round trip."""
        wanted = list(partitions)
        if not wanted:
            return []
        k = self.keys
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in wanted:
                await self._claim(
                    [k.due(p), k.claims(p), k.defs(p), k.heads], [p, incarnation, lease_ms, limit],
                    client=pipe,
                )
            replies = await pipe.execute()
        claimed: list[Claimed] = []
        for p, reply in zip(wanted, replies, strict=True):
            for i in range(1, len(reply), 4):
                definition = _text(reply[i + 2])
                claimed.append(Claimed(
                    p, _text(reply[i]), _text(reply[i + 1]),
                    int(definition.split("|", 1)[0]), int(reply[i + 3]),
                ))
        return claimed

    async def complete(
        self, tick: Claimed, incarnation: str, outcome: str, retry_ms: int = 0,
        reason: str = "", max_undeliverable: int = MAX_UNDELIVERABLE,
    ) -> str:
        k, p = self.keys, tick.partition
        reply = await self._complete(
            [k.due(p), k.claims(p), k.defs(p), k.heads],
            [p, tick.member, incarnation, tick.scheduled_ms, outcome, retry_ms,
             max_undeliverable, reason.replace("|", "/")[:200] or "disabled"],
        )
        return _text(reply)

    async def claims_in(self, partitions: Iterable[int]) -> dict[int, dict[str, str]]:
        """The claims in progress in these partitions: member -> holder's incarnation. Bounded
        by the ticks being delivered, not by the number of reminders."""
        wanted = list(partitions)
        if not wanted:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in wanted:
                pipe.hgetall(self.keys.claims(p))
            replies = await pipe.execute()
        return {
            p: {_text(m): _text(c).split("|", 2)[2] for m, c in reply.items()}
            for p, reply in zip(wanted, replies, strict=True) if reply
        }

    async def release_dead(self, partition: int, member: str, incarnation: str) -> bool:
        k = self.keys
        reply = await self._release(
            [k.due(partition), k.claims(partition), k.heads], [partition, member, incarnation]
        )
        return bool(int(reply))
