"""Grains for the durable-agent tests through real silos (tests/integration/test_durable*.py).

Every step's external effect is an ``HINCRBY`` of a ledger hash in the store, keyed by
``self.step_key``, outside the grain's journal and state: a step applied twice shows as a
count of 2 even if the journal says otherwise. ``durable-probe:{key}:ran`` counts how often
each step's function *started* (replayed steps must not start). A step may be held at a
gate (``...:gate``) the test opens, so a test can kill the silo while the step waits. The
store's URL comes from ``GRAINERY_TEST_STORE_URL``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grainery import Grain, RetryPolicy, RunCancelledError, durable, read_only
from tests.grains.probe_store import store


def probe(key: str, what: str) -> str:
    return f"durable-probe:{key}:{what}"


class Pipeline(Grain):
    """Five (or ``count``) steps; steps from index ``hold_from`` on wait for the gate."""

    def __init__(self) -> None:
        self.current = "idle"

    @durable
    async def run(self, count: int = 5, hold_from: int = 99) -> list[int]:
        results = []
        for i in range(count):
            self.current = f"s{i}"
            results.append(await self.step(f"s{i}", self._effect, i, hold_from))
        self.current = "done"
        return results

    @read_only
    async def progress(self) -> str:
        return self.current

    async def touch(self) -> str:
        """A writing call: it waits while the run's code (its steps included) runs."""
        return self.current

    async def _effect(self, i: int, hold_from: int) -> int:
        redis = store()
        await redis.hincrby(probe(self.key, "ran"), f"s{i}", 1)
        await redis.rpush(probe(self.key, f"keys:s{i}"), self.step_key)  # per start
        await redis.hset(probe(self.key, "where"), f"s{i}", self.silo_id)
        if i >= hold_from:
            # A gate in another process (the test's): polled, no event can cross to here.
            while not await redis.exists(probe(self.key, "gate")):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await redis.hincrby(probe(self.key, "ledger"), self.step_key, 1)
        return i * 10

    @durable
    async def fan_out(self, width: int) -> list[int]:
        """Parallel steps (asyncio.gather), then one more."""
        values = await asyncio.gather(*(
            self.step("fetch", self._effect, i, 99) for i in range(width)
        ))
        total = await self.step("sum", _sum, values)
        return [*values, total]


def _sum(values: list[int]) -> int:  # a sync step function: runs on the blocking pool
    return sum(values)


class Approval(Grain):
    """Reserve, wait for approval (with a timeout) above a threshold, ship; a progress query
    and a plain writing call that are served while the run waits."""

    idle_timeout = 60.0

    def __init__(self) -> None:
        self.progress_note = "idle"

    @durable
    async def order(self, amount: int, wait: float = 30.0) -> dict[str, Any]:
        self.progress_note = "reserving"
        await self.step("reserve", self._effect, "reserve")
        decision: Any = "auto"
        if amount > 100:
            self.progress_note = "awaiting approval"
            try:
                decision = await self.wait_signal("approve", timeout=wait)
            except TimeoutError:
                decision = "timed out"
        self.progress_note = "shipping"
        await self.step("ship", self._effect, "ship")
        self.progress_note = "done"
        return {"amount": amount, "decision": decision}

    @durable
    async def guarded(self) -> str:
        """Waits for "go"; on cancellation releases what it reserved (a compensation step)."""
        await self.step("reserve", self._effect, "reserve")
        try:
            await self.wait_signal("go")
        except RunCancelledError:
            await self.step("release", self._effect, "release")
            raise
        await self.step("ship", self._effect, "ship")
        return "shipped"

    @durable
    async def snooze(self, seconds: float) -> str:
        await self.sleep(seconds)
        await self.step("after", self._effect, "after")
        return "awake"

    async def _effect(self, what: str) -> str:
        await store().hincrby(probe(self.key, "ledger"), self.step_key, 1)
        return what

    @read_only
    async def progress(self) -> str:
        return self.progress_note

    @read_only
    async def where(self) -> str:
        return self.silo_id

    async def touch(self) -> int:
        """A plain (writing) call: served while the run waits."""
        self.state["touched"] = self.state.get("touched", 0) + 1
        await self.write_state()
        return int(self.state["touched"])

    async def leave(self) -> None:
        self.deactivate_on_idle()

    async def on_deactivate(self, reason: str) -> None:
        await store().hincrby(probe(self.key, "deactivated"), reason, 1)


class Flaky(Grain):
    """A step that fails ``failures`` times before it succeeds, under a retry policy."""

    @durable
    async def call_tool(self, failures: int, attempts: int) -> Any:
        return await self.step("tool", self._tool, failures, retry=RetryPolicy(
            max_attempts=attempts, initial=0.01, backoff=2.0, max_interval=0.05))

    async def _tool(self, failures: int) -> str:
        tries = await store().hincrby(probe(self.key, "tries"), "tool", 1)
        if tries <= failures:
            raise ConnectionError(f"tool unavailable (try {tries})")
        return f"ok after {tries}"


class Changing(Grain):
    """Its step name comes from the store, read at activation: flipping it between runs is
    a code change the replay must detect."""

    async def on_activate(self) -> None:
        self.version = (await store().get(probe(self.key, "version")) or b"1").decode()

    @durable
    async def plan(self) -> str:
        await self.step(f"step-v{self.version}", self._effect)
        await self.wait_signal("go")
        await self.step("final", self._effect)
        return "done"

    async def _effect(self) -> None:
        await store().hincrby(probe(self.key, "ledger"), self.step_key, 1)

    async def leave(self) -> None:
        self.deactivate_on_idle()


class Audit(Grain):
    """Plain journal use outside durable runs (an agent's audit trail)."""

    journal_max_entries = 5

    async def note(self, text: str) -> int:
        return await self.journal.append("note", {"text": text})

    async def notes(self, after: int = 0) -> list[int]:
        return [entry.seq for entry in await self.journal.read(after=after, limit=100)]
