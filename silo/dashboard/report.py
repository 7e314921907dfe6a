"""This silo's answer to ``Management.SiloReport``: its stats, sampled history, top grains.

The top grains walk every activation (activity.py), so the walk's result is kept for
``TOP_CACHE`` seconds: several dashboards and ``grainery top`` polling the same silo cost
one walk a second, not one each.
"""

from __future__ import annotations

import time

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.errors import InvalidArgumentsError
from grainery.client.routing import GrainId
from grainery.silo.catalog import Catalog
from grainery.silo.dashboard.activity import WINDOW, Busy, top
from grainery.silo.dashboard.sampler import MetricsSampler, Point

MAX_TOP = 50
MAX_KEY_BYTES = 1024
TOP_CACHE = 1.0  # seconds


def point_to_proto(point: Point) -> pb.MetricsPoint:
    return pb.MetricsPoint(
        time=point.time, interval=point.interval, calls=point.calls, errors=point.errors,
        latency_buckets=point.latency_buckets, calls_in_flight=point.calls_in_flight,
        activations=point.activations, reminder_ticks=point.reminder_ticks,
        reminder_failures=point.reminder_failures,
        reminder_lateness_buckets=point.reminder_lateness_buckets,
        reminder_partitions=point.reminder_partitions,
        stream_published=point.stream_published, stream_delivered=point.stream_delivered,
        stream_redelivered=point.stream_redelivered,
        stream_dead_lettered=point.stream_dead_lettered,
        stream_lag_buckets=point.stream_lag_buckets, stream_partitions=point.stream_partitions,
        events=point.events,
    )


def _busy_to_proto(row: Busy) -> pb.GrainActivity:
    return pb.GrainActivity(
        grain_type=row.grain.grain_type, grain_key=row.grain.key, calls=row.calls,
        total_seconds=row.total, slowest_seconds=row.slowest,
    )


class SiloReporter:
    def __init__(self, catalog: Catalog, sampler: MetricsSampler) -> None:
        self._catalog = catalog
        self._sampler = sampler
        self._top: tuple[float, list[Busy], list[Busy]] = (-TOP_CACHE, [], [])

    def top(self, count: int) -> tuple[list[Busy], list[Busy], float]:
        """The busiest and slowest ``count`` grains here (walked at most once a TOP_CACHE),
        and the seconds they cover: the window before and the current one so far."""
        now = time.perf_counter()
        taken, busiest, slowest = self._top
        if now - taken >= TOP_CACHE:
            pairs = ((a.grain_id, a.activity) for a in self._catalog.activations())
            busiest, slowest = top(pairs, now, MAX_TOP)
            self._top = (taken := now, busiest, slowest)
        return busiest[:count], slowest[:count], WINDOW + taken % WINDOW

    def __call__(
        self, request: pb.SiloReportRequest, stats: pb.SiloStatsResponse
    ) -> pb.SiloReportResponse:
        count = min(request.top, MAX_TOP)
        busiest, slowest, window = self.top(count)
        return pb.SiloReportResponse(
            stats=stats, latency_bounds=self._sampler.bounds,
            points=[point_to_proto(p) for p in self._sampler.recent(request.history_seconds)],
            busiest=[_busy_to_proto(b) for b in busiest],
            slowest=[_busy_to_proto(b) for b in slowest],
            activity_window=window, reminder_lateness_bounds=self._sampler.lateness_bounds,
            stream_lag_bounds=self._sampler.stream_lag_bounds,
        )

    def inspect(self, request: pb.InspectGrainRequest) -> pb.InspectGrainResponse:
        """The grain's activation here, if any (stateless workers: all of them, summed)."""
        if len(request.grain_key.encode()) > MAX_KEY_BYTES or len(request.grain_type) > 256:
            raise InvalidArgumentsError("grain type or key too long")
        grain = GrainId(request.grain_type, request.grain_key)
        found = self._catalog.get(grain)
        activations = [found] if found is not None else [
            a for a in self._catalog.workers.activations() if a.grain_id == grain
        ]
        if not activations:
            return pb.InspectGrainResponse()
        now = time.perf_counter()
        calls, total, slowest = 0, 0.0, 0.0
        for activation in activations:
            c, t, s = activation.activity.recent(now)
            calls, total, slowest = calls + c, total + t, max(slowest, s)
        first = activations[0]
        return pb.InspectGrainResponse(
            active=True, phase=first.phase.value,
            queued=sum(a.queued for a in activations),
            turns=sum(a.turns for a in activations),
            idle_seconds=max(0.0, time.monotonic() - max(a.last_active for a in activations)),
            recent=pb.GrainActivity(grain_type=grain.grain_type, grain_key=grain.key,
                                    calls=calls, total_seconds=total, slowest_seconds=slowest),
            activity_window=WINDOW + now % WINDOW,
            workers=len(activations) if found is None else 0,
        )
