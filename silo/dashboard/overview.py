"""The cluster as the dashboard and ``grainery top`` show it: every member's report, merged.

One function for both, so the terminal and the browser never disagree. Members that are
dead or left are listed from the membership and not asked; a live member that does not
answer within ``timeout`` is shown with its error, and the rest of the view still comes.
Series are merged by the second their points were taken, up to the latest second every
answering silo has sampled (a silo that samples a little later does not make the last
point look like a drop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.routing import ACTIVE, GONE_STATES, MemberInfo, MembershipSnapshot
from grainery.silo.dashboard.series import percentile

Fetch = Callable[[MemberInfo], Awaitable[pb.SiloReportResponse]]
log = logging.getLogger("grainery.dashboard")
REMINDER_SERIES = ("reminder_ticks_per_second", "reminder_failures_per_second",
                   "reminder_lag_p50_ms", "reminder_lag_p99_ms")
STREAM_SERIES = ("stream_published_per_second", "stream_delivered_per_second",
                 "stream_redelivered_per_second", "stream_dead_lettered_per_second",
                 "stream_lag_p50_ms", "stream_lag_p99_ms")
QUANTILES = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}


async def _ask(member: MemberInfo, fetch: Fetch, timeout: float) -> pb.SiloReportResponse | str:
    try:
        return await asyncio.wait_for(fetch(member), timeout)
    except asyncio.TimeoutError:
        return "no answer"
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    except Exception as exc:  # noqa: BLE001 - one member's failure never hides the others
        log.debug("no report from %s", member.address, exc_info=True)
        return type(exc).__name__


def _state(member: MemberInfo, report: pb.SiloReportResponse | str | None) -> str:
    """The membership row's state, or the silo's own word when it knows better (a silo
    that fenced itself while its row still says active)."""
    if isinstance(report, pb.SiloReportResponse) and member.state == ACTIVE:
        own = report.stats.state
        if report.stats.silo_id == member.silo_id and own and own != ACTIVE:
            return own
    return member.state


async def gather(
    snapshot: MembershipSnapshot, shares: dict[str, float], fetch: Fetch,
    served_by: str = "", timeout: float = 2.0,
) -> dict[str, Any]:
    """The whole view, JSON-ready (the dashboard's /api/overview)."""
    members = sorted(snapshot.members, key=lambda m: (m.silo_id, m.started_at))
    asked = [m for m in members if m.state not in GONE_STATES]
    answers = await asyncio.gather(*(_ask(m, fetch, timeout) for m in asked))
    reports: dict[str, pb.SiloReportResponse | str] = {
        m.incarnation: a for m, a in zip(asked, answers, strict=True)
    }
    now = time.time()
    rows: list[dict[str, Any]] = []
    by_silo: dict[str, dict[str, int]] = {}
    good: dict[str, pb.SiloReportResponse] = {}
    for member in members:
        report = reports.get(member.incarnation)
        row: dict[str, Any] = {
            "silo_id": member.silo_id, "address": member.address,
            "state": _state(member, report), "incarnation": member.incarnation,
            "age_seconds": round(max(0.0, now - member.started_at), 1),
            "ring_share": round(shares.get(member.silo_id, 0.0), 4)
            if member.state == ACTIVE else 0.0,
            "activations": None, "calls_in_flight": None, "tasks": None, "error": None,
            "reminder_partitions": None, "stream_partitions": None,
        }
        if isinstance(report, str):
            row["error"] = report
        elif report is not None:
            counts = {t.grain_type: int(t.activations) for t in report.stats.activations}
            by_silo[member.silo_id] = counts
            row.update(activations=sum(counts.values()),
                       calls_in_flight=int(report.stats.calls_in_flight),
                       tasks=int(report.stats.tasks),
                       reminder_partitions=int(report.points[-1].reminder_partitions)
                       if report.points else None,
                       stream_partitions=int(report.points[-1].stream_partitions)
                       if report.points else None)
            good[member.silo_id] = report
        rows.append(row)
    by_type: dict[str, int] = {}
    for counts in by_silo.values():
        for grain_type, count in counts.items():
            by_type[grain_type] = by_type.get(grain_type, 0) + count
    return {
        "cluster": snapshot.cluster, "membership_version": snapshot.version,
        "served_by": served_by, "time": now, "members": rows,
        "activations": {"by_type": dict(sorted(by_type.items())), "by_silo": by_silo},
        "series": merge_series(good),
        **top_grains(good),
    }


def merge_series(reports: dict[str, pb.SiloReportResponse]) -> dict[str, Any]:
    """Cluster-wide rates and percentiles per second (latency buckets are summed before the
    percentile is taken: percentiles of different silos cannot be averaged)."""
    points = {silo: {p.time: p for p in r.points} for silo, r in reports.items() if r.points}
    series: dict[str, Any] = {"time": [], "calls_per_second": [], "errors_per_second": [],
                              **{name: [] for name in QUANTILES}, "by_silo": {},
                              **{name: [] for name in REMINDER_SERIES},
                              **{name: [] for name in STREAM_SERIES}, "events": {}}
    if not points:
        return series
    first = next(iter(reports.values()))
    bounds, late_bounds = first.latency_bounds, first.reminder_lateness_bounds
    lag_bounds = first.stream_lag_bounds
    last = min(max(by_time) for by_time in points.values())
    times = sorted({t for by_time in points.values() for t in by_time if t <= last})
    for silo in points:
        series["by_silo"][silo] = []
    names = sorted({name for by_time in points.values() for point in by_time.values()
                    for name in point.events})
    events: dict[str, list[float]] = {name: [] for name in names}
    series["events"] = events
    for second in times:
        calls = errors = ticks = failed = 0.0
        buckets = [0] * (len(bounds) + 1)
        late = [0] * (len(late_bounds) + 1)
        lag = [0] * (len(lag_bounds) + 1)
        stream_rates = dict.fromkeys(STREAM_SERIES[:4], 0.0)
        event_rates = dict.fromkeys(names, 0.0)
        for silo, by_time in points.items():
            point = by_time.get(second)
            if point is None:
                series["by_silo"][silo].append(None)
                continue
            rate = point.calls / point.interval
            series["by_silo"][silo].append(round(rate, 2))
            calls += rate
            errors += point.errors / point.interval
            for index, count in enumerate(point.latency_buckets[: len(buckets)]):
                buckets[index] += count
            ticks += point.reminder_ticks / point.interval
            failed += point.reminder_failures / point.interval
            for index, count in enumerate(point.reminder_lateness_buckets[: len(late)]):
                late[index] += count
            for name, number in zip(STREAM_SERIES[:4], (
                point.stream_published, point.stream_delivered, point.stream_redelivered,
                point.stream_dead_lettered,
            ), strict=True):
                stream_rates[name] += number / point.interval
            for index, count in enumerate(point.stream_lag_buckets[: len(lag)]):
                lag[index] += count
            for name, count in point.events.items():
                event_rates[name] += count / point.interval
        series["time"].append(second)
        series["reminder_ticks_per_second"].append(round(ticks, 2))
        series["reminder_failures_per_second"].append(round(failed, 2))
        for name, rate in stream_rates.items():
            series[name].append(round(rate, 2))
        for name, rate in event_rates.items():
            events[name].append(round(rate, 2))
        for name, q, the_bounds, counts in (
            ("reminder_lag_p50_ms", 0.5, late_bounds, late),
            ("reminder_lag_p99_ms", 0.99, late_bounds, late),
            ("stream_lag_p50_ms", 0.5, lag_bounds, lag),
            ("stream_lag_p99_ms", 0.99, lag_bounds, lag),
        ):
            value = percentile(the_bounds, counts, q)
            series[name].append(None if value is None else round(value * 1000, 3))
        series["calls_per_second"].append(round(calls, 2))
        series["errors_per_second"].append(round(errors, 2))
        for name, q in QUANTILES.items():
            value = percentile(bounds, buckets, q)
            series[name].append(None if value is None else round(value * 1000, 3))
    return series


def top_grains(reports: dict[str, pb.SiloReportResponse], count: int = 10) -> dict[str, Any]:
    """The busiest (calls per second) and slowest (mean call) grains of the whole cluster."""
    rows: list[dict[str, Any]] = []
    slow: list[dict[str, Any]] = []
    for silo, report in reports.items():
        window = report.activity_window or 1.0
        for source, into in ((report.busiest, rows), (report.slowest, slow)):
            for grain in source:
                into.append({
                    "grain_type": grain.grain_type, "grain_key": grain.grain_key, "silo": silo,
                    "calls": int(grain.calls),
                    "calls_per_second": round(grain.calls / window, 2),
                    "mean_ms": round(1000 * grain.total_seconds / max(grain.calls, 1), 3),
                    "slowest_ms": round(1000 * grain.slowest_seconds, 3),
                })
    rows.sort(key=lambda r: (-r["calls"], r["grain_type"], r["grain_key"]))
    slow.sort(key=lambda r: (-r["mean_ms"], r["grain_type"], r["grain_key"]))
    return {"busiest": rows[:count], "slowest": slow[:count]}
