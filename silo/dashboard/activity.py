"""Which grains are busiest and slowest right now, counted on the call path at O(1) cost.

Each activation carries one :class:`GrainActivity`: its calls, their total and longest time,
in the current window of ``WINDOW`` seconds and the one before. Recording a call is a few
attribute updates (no dict, no lock, no allocation); a window rolls over lazily on the
grain's next call, so an idle grain costs nothing. Listing the top grains walks the
activations only when someone asks (``top``), which the dashboard does about once a second
per silo (the report is cached, see report.py).

Why not a top-k sketch beside the dispatcher: every call would pay a dict lookup keyed by
the grain, and an evicted grain's count would be wrong; the activation is already at hand.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from grainery.client.routing import GrainId

WINDOW = 10.0  # seconds per window; a report covers the current one and the one before


class GrainActivity:
    __slots__ = ("calls", "epoch", "previous", "slowest", "total")

    def __init__(self) -> None:
        self.epoch = 0.0  # which WINDOW the current counts belong to
        self.calls = 0
        self.total = 0.0
        self.slowest = 0.0
        self.previous: tuple[int, float, float] = (0, 0.0, 0.0)  # the window before

    def record(self, now: float, seconds: float) -> None:
        """A call of ``seconds`` ended at ``now`` (``time.perf_counter()``)."""
        epoch = now // WINDOW
        if epoch != self.epoch:
            self._roll(epoch)
        self.calls += 1
        self.total += seconds
        if seconds > self.slowest:
            self.slowest = seconds

    def _roll(self, epoch: float) -> None:
        if epoch == self.epoch + 1:
            self.previous = (self.calls, self.total, self.slowest)
        else:
            self.previous = (0, 0.0, 0.0)
        self.epoch = epoch
        self.calls, self.total, self.slowest = 0, 0.0, 0.0

    def recent(self, now: float) -> tuple[int, float, float]:
        """(calls, total seconds, slowest) over the current window and the one before."""
        epoch = now // WINDOW
        if epoch == self.epoch:
            calls, total, slowest = self.previous
            return calls + self.calls, total + self.total, max(slowest, self.slowest)
        if epoch == self.epoch + 1:
            return self.calls, self.total, self.slowest
        return 0, 0.0, 0.0


@dataclass(frozen=True)
class Busy:
    grain: GrainId
    calls: int
    total: float
    slowest: float

    @property
    def mean(self) -> float:
        return self.total / self.calls if self.calls else 0.0


def top(
    activities: Iterable[tuple[GrainId, GrainActivity]], now: float, count: int
) -> tuple[list[Busy], list[Busy]]:
    """The ``count`` busiest grains (most calls) and slowest (longest mean call) over the
    recent windows; several activations of one grain (stateless workers) are summed."""
    merged: dict[GrainId, list[float]] = {}
    for grain, activity in activities:
        calls, total, slowest = activity.recent(now)
        if not calls:
            continue
        seen = merged.get(grain)
        if seen is None:
            merged[grain] = [calls, total, slowest]
        else:
            seen[0] += calls
            seen[1] += total
            seen[2] = max(seen[2], slowest)
    rows = [Busy(g, int(c), t, s) for g, (c, t, s) in merged.items()]
    busiest = heapq.nlargest(count, rows, key=lambda b: (b.calls, b.total))
    slow = heapq.nlargest(count, rows, key=lambda b: (b.mean, b.slowest))
    return busiest, slow
