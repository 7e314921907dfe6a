"""Probe grains for reentrancy and one-way calls (tests/integration/test_reentrancy.py).

Each turn-logging grain appends ``(event, kind, i)`` to an in-memory turn log as a turn
starts and ends; ``report()`` reads the log back and says how many turns were in progress at
once, so a test can see overlaps from outside the silo process.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from grainery import interleave, one_way, read_only
from grainery.silo import Grain


def most_at_once(log: list[tuple[str, str, int]], kinds: set[str]) -> int:
    """The most turns of ``kinds`` in progress at once, replaying the log."""
    now = most = 0
    for event, kind, _ in log:
        if kind in kinds:
            now += 1 if event == "start" else -1
            most = max(most, now)
    return most


def writer_overlaps(log: list[tuple[str, str, int]]) -> int:
    """How many times a turn started while a writer ran, or a writer started while any
    turn ran."""
    running: set[tuple[str, int]] = set()
    overlaps = 0
    for event, kind, i in log:
        if event == "start":
            if running and (kind == "write" or any(k == "write" for k, _ in running)):
                overlaps += 1
            running.add((kind, i))
        else:
            running.discard((kind, i))
    return overlaps


class TurnLog(Grain):
    abstract = True

    async def on_activate(self) -> None:
        self.log: list[tuple[str, str, int]] = []

    async def report(self) -> dict[str, Any]:
        return {
            "turns": sum(1 for event, _, _ in self.log if event == "end"),
            "most_at_once": most_at_once(self.log, {"slow", "read", "write"}),
            "most_readers_at_once": most_at_once(self.log, {"read"}),
            "writer_overlaps": writer_overlaps(self.log),
        }


class ReentrantTurns(TurnLog):
    """Each slow call waits (bounded) until ``expect`` calls have started: on a reentrant
    grain they all get there, so the log shows them all in progress at once."""

    reentrant = True

    async def on_activate(self) -> None:
        await super().on_activate()
        self.started = 0
        self.all_started = asyncio.Event()

    async def slow(self, i: int, expect: int) -> int:
        self.log.append(("start", "slow", i))
        self.started += 1
        if self.started >= expect:
            self.all_started.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.all_started.wait(), 10)
        self.log.append(("end", "slow", i))
        return i


class PlainTurns(TurnLog):
    async def slow(self, i: int, pause: float) -> int:
        self.log.append(("start", "slow", i))
        await asyncio.sleep(pause)
        self.log.append(("end", "slow", i))
        return i


class ReadWrite(TurnLog):
    @read_only
    async def peek(self, i: int, pause: float) -> int:
        self.log.append(("start", "read", i))
        await asyncio.sleep(pause)
        self.log.append(("end", "read", i))
        return i

    async def poke(self, i: int, pause: float) -> int:
        self.log.append(("start", "write", i))
        await asyncio.sleep(pause)
        self.log.append(("end", "write", i))
        return i


class Mailbox(Grain):
    """One-way deliveries wait on a gate the test opens, then record their order."""

    async def on_activate(self) -> None:
        self.gate = asyncio.Event()
        self.delivered: list[int] = []

    @one_way
    async def deliver(self, i: int) -> None:
        await self.gate.wait()
        self.delivered.append(i)

    @one_way
    async def explode(self, message: str) -> None:
        raise ValueError(message)

    @interleave
    async def open_gate(self) -> None:
        self.gate.set()

    @interleave
    async def progress(self) -> list[int]:
        return self.delivered
