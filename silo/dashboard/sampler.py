"""Once a second, this silo's call counters and latency histogram, kept for a few minutes.

The dashboard's charts need rates and percentiles *over time*; Prometheus keeps only running
totals, and a silo must not depend on a Prometheus server being there. So the silo samples
its own registry (``grainery_calls_total`` by outcome, ``grainery_call_duration_seconds``
buckets, summed over grain types and methods) and keeps the differences in a ring buffer of
``HISTORY`` points. A sample reads the registry only (no grain, no store): one pass over the
metric children, about a millisecond for two hundred (grain type, method) pairs
(``python -m bench.dashboard_cost``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grainery.silo.dashboard.series import cumulative_to_buckets, deltas
from grainery.silo.metrics import _LATENCY_BUCKETS, SiloMetrics

HISTORY = 300  # points (seconds) kept
INTERVAL = 1.0  # seconds between samples


@dataclass(frozen=True)
class Point:
    """One interval of this silo's calls (see MetricsPoint in the proto)."""

    time: int
    interval: float
    calls: int
    errors: int
    latency_buckets: tuple[int, ...]
    calls_in_flight: int
    activations: int


@dataclass
class _Totals:
    calls: float = 0.0
    errors: float = 0.0
    buckets: list[float] = field(default_factory=list)


class MetricsSampler:
    def __init__(
        self, metrics: SiloMetrics, in_flight: Callable[[], int],
        activations: Callable[[], int], history: int = HISTORY,
    ) -> None:
        self._metrics = metrics
        self._in_flight = in_flight
        self._activations = activations
        self.points: deque[Point] = deque(maxlen=history)
        self.bounds: tuple[float, ...] = _LATENCY_BUCKETS  # the histogram's (and +Inf)
        self._last = self._totals()
        self._last_at = time.monotonic()

    def _totals(self) -> _Totals:
        try:
            return self._read_children()
        except AttributeError:  # another prometheus-client's insides: the public way
            return self._collect()

    def _read_children(self) -> _Totals:
        """The fast way: each labelled child's value, read as prometheus-client keeps it
        (per-bucket counts, not cumulative). About 10x cheaper than ``collect()``, which
        builds a Sample and a label dict per bucket; unit-tested against it."""
        totals = _Totals(buckets=[0.0] * (len(self.bounds) + 1))
        children: dict[Any, Any] = self._metrics.calls._metrics.copy()
        for labels, child in children.items():
            value = child._value.get()
            totals.calls += value
            if labels[-1] != "ok":  # labels: grain_type, method, outcome
                totals.errors += value
        buckets = totals.buckets
        histograms: dict[Any, Any] = self._metrics.call_duration._metrics.copy()
        for histogram in histograms.values():
            for index, bucket in enumerate(histogram._buckets):
                buckets[index] += bucket.get()
        return totals

    def _collect(self) -> _Totals:
        totals = _Totals(buckets=[0.0] * (len(self.bounds) + 1))
        for metric in self._metrics.calls.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    totals.calls += sample.value
                    if sample.labels.get("outcome") != "ok":
                        totals.errors += sample.value
        index = {bound: i for i, bound in enumerate(self.bounds)}
        cumulative = [0.0] * (len(self.bounds) + 1)
        for metric in self._metrics.call_duration.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    le = sample.labels["le"]
                    slot = len(self.bounds) if le == "+Inf" else index[float(le)]
                    cumulative[slot] += sample.value
        totals.buckets = cumulative_to_buckets(cumulative)
        return totals

    def sample(self) -> Point:
        """Take one sample now and keep it (the loop calls this every INTERVAL)."""
        totals = self._totals()
        now = time.monotonic()
        last, self._last = self._last, totals
        interval, self._last_at = max(now - self._last_at, 1e-6), now
        per_bucket = deltas(last.buckets, totals.buckets)
        point = Point(
            time=int(time.time()), interval=interval,
            calls=max(0, int(totals.calls - last.calls)),
            errors=max(0, int(totals.errors - last.errors)),
            latency_buckets=tuple(per_bucket), calls_in_flight=self._in_flight(),
            activations=self._activations(),
        )
        self.points.append(point)
        return point

    def recent(self, seconds: int) -> list[Point]:
        """The points of the last ``seconds`` (all kept when 0)."""
        if seconds <= 0 or seconds >= len(self.points):
            return list(self.points)
        return list(self.points)[-seconds:]

    async def run(self) -> None:
        """Sample every INTERVAL until cancelled (a silo's background task)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += INTERVAL
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.sample()
            if loop.time() - next_at > INTERVAL:  # the loop was blocked: do not catch up
                next_at = loop.time()
