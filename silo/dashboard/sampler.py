"""Once a second, this silo's call and reminder-tick counters and their latency histograms,
kept for a few minutes.

The dashboard's charts need rates and percentiles *over time*; Prometheus keeps only running
totals, and a silo must not depend on a Prometheus server being there. So the silo samples
its own registry (``grainery_calls_total`` by outcome, ``grainery_call_duration_seconds``
buckets, summed over grain types and methods; the same for ``grainery_reminder_ticks_total``
and ``grainery_reminder_lateness_seconds``, the reminders' lag; stream events published,
delivered, redelivered and dead-lettered, and ``grainery_stream_delivery_lag_seconds``;
durable steps by outcome and runs by event) and keeps the differences in a ring buffer of
``HISTORY`` points. A sample reads the registry only (no grain, no store): one pass over the
metric children, about a millisecond for two hundred (grain type, method) pairs (``python -m
bench.dashboard_cost``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from grainery.silo.dashboard.series import cumulative_to_buckets, deltas
from grainery.silo.metrics import SiloMetrics

HISTORY = 300  # points (seconds) kept
INTERVAL = 1.0  # seconds between samples


@dataclass(frozen=True)
class Point:
    """One interval of this silo's calls, reminder ticks and stream deliveries (see
    MetricsPoint in the proto)."""

    time: int
    interval: float
    calls: int
    errors: int
    latency_buckets: tuple[int, ...]
    calls_in_flight: int
    activations: int
    reminder_ticks: int = 0
    reminder_failures: int = 0
    reminder_lateness_buckets: tuple[int, ...] = ()
    reminder_partitions: int = 0
    stream_published: int = 0
    stream_delivered: int = 0
    stream_redelivered: int = 0
    stream_dead_lettered: int = 0
    stream_lag_buckets: tuple[int, ...] = ()
    stream_partitions: int = 0
    # Other events of the interval by "family.label" (durable steps by outcome, runs by event).
    events: dict[str, int] = field(default_factory=dict)


@dataclass
class _Totals:
    """Running totals of one counter-by-outcome and its histogram (per-bucket counts)."""

    count: float = 0.0
    failed: float = 0.0  # every outcome but "ok"
    buckets: list[float] = field(default_factory=list)


def _read_children(counter: Counter, histogram: Histogram, slots: int) -> _Totals:
    """The fast way: each labelled child's value, read as prometheus-client keeps it
    (per-bucket counts, not cumulative). About 10x cheaper than ``collect()``, which builds
    a Sample and a label dict per bucket; unit-tested against it. The outcome is the
    counter's last label."""
    totals = _Totals(buckets=[0.0] * slots)
    children: dict[Any, Any] = counter._metrics.copy()
    for labels, child in children.items():
        value = child._value.get()
        totals.count += value
        if labels[-1] != "ok":
            totals.failed += value
    buckets = totals.buckets
    histograms: dict[Any, Any] = histogram._metrics.copy()
    for child in histograms.values():
        for index, bucket in enumerate(child._buckets):
            buckets[index] += bucket.get()
    return totals


def _collect(counter: Counter, histogram: Histogram, bounds: tuple[float, ...]) -> _Totals:
    """The public way (``collect()``), for a prometheus-client whose insides differ."""
    totals = _Totals()
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                totals.count += sample.value
                if sample.labels.get("outcome") != "ok":
                    totals.failed += sample.value
    index = {bound: i for i, bound in enumerate(bounds)}
    cumulative = [0.0] * (len(bounds) + 1)
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                le = sample.labels["le"]
                slot = len(bounds) if le == "+Inf" else index[float(le)]
                cumulative[slot] += sample.value
    totals.buckets = cumulative_to_buckets(cumulative)
    return totals


def _sum(counter: Counter) -> float:
    """A counter's total over its labels (fast read, or ``collect()``)."""
    try:
        children: dict[Any, Any] = counter._metrics.copy()
        return float(sum(child._value.get() for child in children.values()))
    except AttributeError:
        return sum(sample.value for metric in counter.collect() for sample in metric.samples
                   if sample.name.endswith("_total"))


def _by_last_label(counter: Counter, family: str, into: dict[str, float]) -> None:
    """Add a counter's totals per value of its last label to ``into["family.value"]``."""
    try:
        children: dict[Any, Any] = counter._metrics.copy()
        pairs = [(labels[-1], child._value.get()) for labels, child in children.items()]
    except AttributeError:
        pairs = [(list(sample.labels.values())[-1], sample.value)
                 for metric in counter.collect() for sample in metric.samples
                 if sample.name.endswith("_total")]
    for label, value in pairs:
        key = f"{family}.{label}"
        into[key] = into.get(key, 0.0) + value


def _gauge(gauge: Gauge) -> int:
    try:
        return int(gauge._value.get())
    except AttributeError:
        samples = next(iter(gauge.collect())).samples
        return int(samples[0].value) if samples else 0


def _bounds(histogram: Histogram) -> tuple[float, ...]:
    """A histogram's bucket bounds without +Inf."""
    return tuple(float(b) for b in histogram._upper_bounds[:-1])


class MetricsSampler:
    def __init__(
        self, metrics: SiloMetrics, in_flight: Callable[[], int],
        activations: Callable[[], int], history: int = HISTORY,
    ) -> None:
        self._metrics = metrics
        self._in_flight = in_flight
        self._activations = activations
        self.points: deque[Point] = deque(maxlen=history)
        self.bounds: tuple[float, ...] = _bounds(metrics.call_duration)
        self.lateness_bounds: tuple[float, ...] = _bounds(metrics.reminder_lateness)
        self.stream_lag_bounds: tuple[float, ...] = _bounds(metrics.stream_delivery_lag)
        self._last = self._totals()
        self._last_streams = self._stream_totals()
        self._last_events = self._event_totals()
        self._last_at = time.monotonic()

    def _pair(self, counter: Counter, histogram: Histogram,
              bounds: tuple[float, ...]) -> _Totals:
        try:
            return _read_children(counter, histogram, len(bounds) + 1)
        except AttributeError:  # another prometheus-client's insides: the public way
            return _collect(counter, histogram, bounds)

    def _totals(self) -> tuple[_Totals, _Totals]:
        metrics = self._metrics
        return (self._pair(metrics.calls, metrics.call_duration, self.bounds),
                self._pair(metrics.reminder_ticks, metrics.reminder_lateness,
                           self.lateness_bounds))

    def _event_totals(self) -> dict[str, float]:
        """Durable agents' steps by outcome and runs by event."""
        totals: dict[str, float] = {}
        _by_last_label(self._metrics.durable_steps, "durable_steps", totals)
        _by_last_label(self._metrics.durable_runs, "durable_runs", totals)
        return totals

    def _stream_totals(self) -> tuple[float, float, float, _Totals]:
        """Published, redelivered and dead-lettered events; delivered ones (``count``) with
        their publish-to-delivery lag buckets."""
        metrics = self._metrics
        delivered = self._pair(metrics.stream_delivered, metrics.stream_delivery_lag,
                               self.stream_lag_bounds)
        return (_sum(metrics.stream_published), _sum(metrics.stream_redelivered),
                _sum(metrics.stream_dead_lettered), delivered)

    def sample(self) -> Point:
        """Take one sample now and keep it (the loop calls this every INTERVAL)."""
        calls, ticks = totals = self._totals()
        published, redelivered, dead, delivered = streams = self._stream_totals()
        events = self._event_totals()
        last_events, self._last_events = self._last_events, events
        now = time.monotonic()
        (last_calls, last_ticks), self._last = self._last, totals
        (last_published, last_redelivered, last_dead, last_delivered), self._last_streams = (
            self._last_streams, streams)
        interval, self._last_at = max(now - self._last_at, 1e-6), now
        point = Point(
            time=int(time.time()), interval=interval,
            calls=max(0, int(calls.count - last_calls.count)),
            errors=max(0, int(calls.failed - last_calls.failed)),
            latency_buckets=tuple(deltas(last_calls.buckets, calls.buckets)),
            calls_in_flight=self._in_flight(), activations=self._activations(),
            reminder_ticks=max(0, int(ticks.count - last_ticks.count)),
            reminder_failures=max(0, int(ticks.failed - last_ticks.failed)),
            reminder_lateness_buckets=tuple(deltas(last_ticks.buckets, ticks.buckets)),
            reminder_partitions=_gauge(self._metrics.reminder_partitions),
            stream_published=max(0, int(published - last_published)),
            stream_delivered=max(0, int(delivered.count - last_delivered.count)),
            stream_redelivered=max(0, int(redelivered - last_redelivered)),
            stream_dead_lettered=max(0, int(dead - last_dead)),
            stream_lag_buckets=tuple(deltas(last_delivered.buckets, delivered.buckets)),
            stream_partitions=_gauge(self._metrics.stream_partitions),
            events={key: max(0, int(value - last_events.get(key, 0.0)))
                    for key, value in events.items()},
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
