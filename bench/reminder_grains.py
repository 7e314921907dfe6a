"""The grain the reminder benchmark's silos host (``--grains bench.reminder_grains``).

``remind_many`` registers a batch of reminders on one grain (so the register rate measures
the reminder path, not one activation per reminder). ``receive_reminder`` does nothing but
note how late it ran (its wall-clock time minus the tick's scheduled time); the notes are
flushed to the store in batches (one RPUSH every 0.2 s per silo) so recording costs little.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis.asyncio as aioredis

from grainery import Grain, ReminderTick

LATENESS_KEY = "bench:reminders:lateness-ms"
_pending: list[str] = []
_flusher: asyncio.Task[None] | None = None


async def _flush_forever() -> None:
    store = aioredis.Redis.from_url(os.environ["GRAINERY_BENCH_STORE_URL"])
    while True:
        await asyncio.sleep(0.2)
        if _pending:
            batch = _pending[:]
            del _pending[:len(batch)]
            await store.rpush(LATENESS_KEY, *batch)


class BenchReminder(Grain):
    async def remind_many(self, count: int, first_due: float, spacing: float,
                          period: float, fire_at: float) -> int:
        """``count`` reminders ``r0..``: reminder i is first due at ``fire_at + first_due +
        i * spacing`` (Unix seconds; ``fire_at`` = 0: relative to now)."""
        now = time.time()
        for i in range(count):
            start = (fire_at or now) + first_due + i * spacing
            await self.register_reminder(f"r{i}", due=max(0.0, start - now), period=period)
        return count

    async def receive_reminder(self, name: str, tick: ReminderTick) -> None:
        global _flusher
        _pending.append(f"{(time.time() - tick.scheduled) * 1000:.1f}")
        if _flusher is None or _flusher.done():
            _flusher = asyncio.get_running_loop().create_task(_flush_forever())
