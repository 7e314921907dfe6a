"""The dashboard's arithmetic and its HTTP server, without a silo: percentiles from buckets,
the per-grain activity windows, merging silos' series, and the server's auth and refusals."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.routing import GrainId
from grainery.silo.dashboard.activity import WINDOW, GrainActivity, top
from grainery.silo.dashboard.http import DashboardServer, HttpError, server_ssl_context
from grainery.silo.dashboard.overview import merge_series, top_grains
from grainery.silo.dashboard.sampler import MetricsSampler, _collect, _read_children
from grainery.silo.dashboard.series import cumulative_to_buckets, deltas, percentile
from grainery.silo.metrics import SiloMetrics
from tests.eventually import eventually
from tests.integration.pki import make_pki

BOUNDS = (0.001, 0.01, 0.1)


def test_percentile_interpolates_inside_the_bucket_that_holds_the_rank() -> None:
    # 10 calls <= 1 ms, 10 in (1, 10] ms: the median is the 1 ms bound, p75 halfway up.
    assert percentile(BOUNDS, [10, 10, 0, 0], 0.5) == pytest.approx(0.001)
    assert percentile(BOUNDS, [10, 10, 0, 0], 0.75) == pytest.approx(0.0055)
    assert percentile(BOUNDS, [0, 0, 0, 4], 0.99) == pytest.approx(0.1)  # beyond the last bound
    assert percentile(BOUNDS, [0, 0, 0, 0], 0.5) is None


def test_bucket_deltas_survive_a_counter_reset() -> None:
    assert cumulative_to_buckets([1, 3, 3, 6]) == [1, 2, 0, 3]
    assert deltas([1, 2, 0, 3], [4, 2, 1, 3]) == [3, 0, 1, 0]
    assert deltas([5, 5], [2, 7]) == [2, 2]  # went down: counted from zero


def test_the_sampler_turns_totals_into_per_second_points() -> None:
    metrics = SiloMetrics()
    sampler = MetricsSampler(metrics, lambda: 3, lambda: 7)
    metrics.calls.labels("A", "f", "ok").inc(5)
    metrics.calls.labels("A", "f", "application").inc(2)
    for _ in range(5):
        metrics.call_duration.labels("A", "f").observe(0.003)
    point = sampler.sample()
    assert (point.calls, point.errors, point.calls_in_flight, point.activations) == (7, 2, 3, 7)
    assert sum(point.latency_buckets) == 5
    assert percentile(sampler.bounds, list(point.latency_buckets), 0.5) == pytest.approx(
        0.0025 + 0.0025 * 0.5, rel=0.01)
    assert sampler.sample().calls == 0  # only what happened since the last sample


def test_the_samplers_fast_read_agrees_with_prometheus_collect() -> None:
    metrics = SiloMetrics()
    sampler = MetricsSampler(metrics, lambda: 0, lambda: 0)
    for index, seconds in enumerate((0.0001, 0.002, 0.02, 0.3, 7.0, 99.0)):
        metrics.calls.labels(f"T{index % 2}", "m", "ok" if index % 3 else "deadline").inc()
        metrics.call_duration.labels(f"T{index % 2}", f"m{index}").observe(seconds)
    fast = _read_children(metrics.calls, metrics.call_duration, len(sampler.bounds) + 1)
    slow = _collect(metrics.calls, metrics.call_duration, sampler.bounds)
    assert (fast.count, fast.failed) == (slow.count, slow.failed) == (6, 2)
    assert fast.buckets == slow.buckets
    assert sum(fast.buckets) == 6 and fast.buckets[-1] == 1  # 99 s: beyond the last bound


def test_the_sampler_follows_reminder_ticks_and_their_lag() -> None:
    metrics = SiloMetrics()
    sampler = MetricsSampler(metrics, lambda: 0, lambda: 0)
    for outcome, lateness in (("ok", 0.02), ("ok", 0.02), ("ok", 0.2), ("retried", 3.0)):
        metrics.reminder_ticks.labels("R", outcome).inc()
        metrics.reminder_lateness.labels("R").observe(lateness)
    metrics.reminder_partitions.set(5)
    point = sampler.sample()
    assert (point.reminder_ticks, point.reminder_failures, point.reminder_partitions) == (
        4, 1, 5)
    assert sum(point.reminder_lateness_buckets) == 4
    p50 = percentile(sampler.lateness_bounds, list(point.reminder_lateness_buckets), 0.5)
    assert p50 is not None and 0.01 < p50 <= 0.025
    assert sampler.sample().reminder_ticks == 0


def test_the_sampler_follows_stream_events_and_their_delivery_lag() -> None:
    metrics = SiloMetrics()
    sampler = MetricsSampler(metrics, lambda: 0, lambda: 0)
    metrics.stream_published.labels("a").inc(5)
    metrics.stream_published.labels("b").inc(2)
    for lag in (0.004, 0.004, 0.2):
        metrics.stream_delivered.labels("a").inc()
        metrics.stream_delivery_lag.labels("a").observe(lag)
    metrics.stream_redelivered.labels("a").inc(2)
    metrics.stream_dead_lettered.labels("b").inc()
    metrics.stream_partitions.set(3)
    point = sampler.sample()
    assert (point.stream_published, point.stream_delivered, point.stream_redelivered,
            point.stream_dead_lettered, point.stream_partitions) == (7, 3, 2, 1, 3)
    p50 = percentile(sampler.stream_lag_bounds, list(point.stream_lag_buckets), 0.5)
    assert p50 is not None and 0.0025 < p50 <= 0.005
    assert sampler.sample().stream_published == 0


def test_the_sampler_counts_durable_steps_and_runs_by_label() -> None:
    metrics = SiloMetrics()
    sampler = MetricsSampler(metrics, lambda: 0, lambda: 0)
    metrics.durable_steps.labels("A", "ok").inc(3)
    metrics.durable_steps.labels("B", "ok").inc(1)
    metrics.durable_steps.labels("A", "replayed").inc(2)
    metrics.durable_runs.labels("A", "started").inc()
    assert sampler.sample().events == {
        "durable_steps.ok": 4, "durable_steps.replayed": 2, "durable_runs.started": 1}
    metrics.durable_runs.labels("A", "completed").inc()
    assert sampler.sample().events == {
        "durable_steps.ok": 0, "durable_steps.replayed": 0, "durable_runs.started": 0,
        "durable_runs.completed": 1}


def test_activity_counts_the_current_and_previous_window_only() -> None:
    activity = GrainActivity()
    start = 100 * WINDOW
    activity.record(start + 1, 0.002)
    activity.record(start + 2, 0.004)
    assert activity.recent(start + 3) == (2, pytest.approx(0.006), 0.004)
    activity.record(start + WINDOW + 1, 0.001)  # the next window
    assert activity.recent(start + WINDOW + 2) == (3, pytest.approx(0.007), 0.004)
    assert activity.recent(start + 2 * WINDOW + 1) == (1, pytest.approx(0.001), 0.001)
    assert activity.recent(start + 5 * WINDOW) == (0, 0.0, 0.0)
    activity.record(start + 9 * WINDOW, 0.5)  # long idle: nothing old carried over
    assert activity.recent(start + 9 * WINDOW) == (1, 0.5, 0.5)


def test_top_ranks_by_calls_and_by_mean_and_sums_worker_activations() -> None:
    now = 100 * WINDOW
    busy, slow, worker1, worker2 = (GrainActivity() for _ in range(4))
    for _ in range(5):
        busy.record(now, 0.001)
    slow.record(now, 0.5)
    for worker in (worker1, worker2):
        for _ in range(2):
            worker.record(now, 0.01)
    rows = [(GrainId("A", "busy"), busy), (GrainId("A", "slow"), slow),
            (GrainId("W", "w"), worker1), (GrainId("W", "w"), worker2),
            (GrainId("A", "idle"), GrainActivity())]
    busiest, slowest = top(rows, now, 2)
    assert [(b.grain.key, b.calls) for b in busiest] == [("busy", 5), ("w", 4)]
    assert [b.grain.key for b in slowest] == ["slow", "w"]


def _report(times: list[int], calls: int, buckets: list[int]) -> pb.SiloReportResponse:
    return pb.SiloReportResponse(
        latency_bounds=BOUNDS, activity_window=10.0,
        reminder_lateness_bounds=BOUNDS,
        points=[pb.MetricsPoint(time=t, interval=1.0, calls=calls, errors=1,
                                latency_buckets=buckets, reminder_ticks=calls // 2,
                                reminder_lateness_buckets=buckets) for t in times],
        busiest=[pb.GrainActivity(grain_type="A", grain_key=str(calls), calls=calls * 10,
                                  total_seconds=calls * 0.01, slowest_seconds=0.01)],
    )


def test_series_of_silos_merge_by_second_up_to_the_latest_all_have() -> None:
    merged = merge_series({
        "s1": _report([10, 11, 12], 4, [4, 0, 0, 0]),
        "s2": _report([11, 12, 13], 6, [0, 0, 6, 0]),  # 13: s1 has not sampled it yet
    })
    assert merged["time"] == [10, 11, 12]
    assert merged["calls_per_second"] == [4.0, 10.0, 10.0]
    assert merged["errors_per_second"] == [1.0, 2.0, 2.0]
    assert merged["by_silo"] == {"s1": [4.0, 4.0, 4.0], "s2": [None, 6.0, 6.0]}
    # Buckets are summed, then the percentile taken: 4 fast + 6 slow calls.
    assert merged["p50_ms"][1] == pytest.approx(10 + 90 * (5 - 4) / 6, rel=1e-3)
    assert merged["p50_ms"][0] == pytest.approx(0.5)
    assert merged["reminder_ticks_per_second"] == [2.0, 5.0, 5.0]
    assert merged["reminder_lag_p50_ms"] == merged["p50_ms"]  # the same buckets here
    ranked = top_grains({"s1": _report([1], 4, []), "s2": _report([1], 6, [])})
    assert [(r["grain_key"], r["silo"], r["calls_per_second"]) for r in ranked["busiest"]] == [
        ("6", "s2", 6.0), ("4", "s1", 4.0)]


# ----- the HTTP server ---------------------------------------------------------
async def _overview() -> dict[str, Any]:
    return {"members": ["x"]}


async def _lookup(grain_type: str, key: str) -> dict[str, Any]:
    if grain_type != "Known":
        raise HttpError(404, f"no grain type {grain_type!r}")
    return {"grain_type": grain_type, "grain_key": key}


@pytest.fixture
async def server() -> AsyncIterator[DashboardServer]:
    dashboard = DashboardServer("127.0.0.1", 0, "s3cret", _overview, _lookup)
    await dashboard.start()
    yield dashboard
    await dashboard.stop()


async def _request(
    port: int, raw: bytes, tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(raw)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    if not reply:
        raise ConnectionError("closed without an answer")
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _get(path: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def test_every_route_needs_the_token_and_a_browser_signs_in_once(
    server: DashboardServer,
) -> None:
    for path in ("/", "/api/overview", "/api/grain?type=Known&key=k", "/static/dashboard.js"):
        status, _, _ = await _request(server.port, _get(path))
        assert status == 401, path
    status, headers, _ = await _request(server.port,
                                        _get("/api/overview", "Authorization: Bearer no"))
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    status, _, body = await _request(server.port,
                                     _get("/api/overview", "Authorization: Bearer s3cret"))
    assert (status, json.loads(body)) == (200, {"members": ["x"]})
    # The browser's way: ?token= once sets an HttpOnly cookie (not the token) and redirects.
    assert (await _request(server.port, _get("/?token=wrong")))[0] == 401
    status, headers, _ = await _request(server.port, _get("/?token=s3cret&x=1"))
    assert status == 303 and headers["location"] == "/?x=1"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret" not in cookie
    value = cookie.split(";")[0]
    status, _, body = await _request(server.port, _get("/", f"Cookie: other=1; {value}"))
    assert status == 200 and b"<title>Grainery dashboard</title>" in body
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert (await _request(server.port, _get("/", f"Cookie: {tampered}")))[0] == 401


async def test_bad_requests_get_a_status_and_the_server_keeps_serving(
    server: DashboardServer,
) -> None:
    auth = "Authorization: Bearer s3cret"
    assert (await _request(server.port, b"GARBAGE\r\n\r\n"))[0] == 400
    assert (await _request(server.port, b"GET nothing HTTP/1.1\r\n\r\n"))[0] == 400
    assert (await _request(server.port, _get("/", "no colon here")))[0] == 400
    huge = _get("/", "X-Big: " + "a" * 40_000)
    assert (await _request(server.port, huge))[0] == 431
    post = f"POST /api/overview HTTP/1.1\r\n{auth}\r\n\r\n".encode()
    assert (await _request(server.port, post))[0] == 405
    assert (await _request(server.port, _get("/nope", auth)))[0] == 404
    assert (await _request(server.port, _get("/static/../http.py", auth)))[0] == 404
    status, _, body = await _request(server.port, _get("/api/grain?type=Nope&key=k", auth))
    assert status == 404 and b"Nope" in body
    status, _, body = await _request(server.port, _get("/api/grain?type=Known&key=a%2Fb", auth))
    assert status == 200 and json.loads(body)["grain_key"] == "a/b"
    status, headers, _ = await _request(server.port, _get("/static/uPlot.iife.min.js", auth))
    assert status == 200 and headers["content-type"].startswith("text/javascript")


async def test_with_the_silos_certificate_the_dashboard_is_https_only(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = server_ssl_context(pki.server_cert, pki.server_key, pki.ca)  # mutual TLS
    dashboard = DashboardServer("127.0.0.1", 0, None, _overview, _lookup, tls)
    await dashboard.start()
    try:
        client = ssl.create_default_context(cafile=pki.ca)
        client.load_cert_chain(pki.client_cert, pki.client_key)
        status, _, body = await _request(dashboard.port, _get("/api/overview"), client)
        assert (status, json.loads(body)) == (200, {"members": ["x"]})
        # Plain HTTP gets no page; nor does TLS without a client certificate.
        with pytest.raises((ValueError, ConnectionError, asyncio.IncompleteReadError)):
            await _request(dashboard.port, _get("/api/overview"))
        with pytest.raises((ssl.SSLError, ConnectionError, ValueError)):
            await _request(dashboard.port, _get("/api/overview"),
                           ssl.create_default_context(cafile=pki.ca))
    finally:
        await dashboard.stop()


async def test_connections_beyond_the_bound_are_refused_and_the_rest_served() -> None:
    dashboard = DashboardServer("127.0.0.1", 0, None, _overview, _lookup, max_connections=3)
    await dashboard.start()
    idle = [await asyncio.open_connection("127.0.0.1", dashboard.port) for _ in range(3)]
    try:
        async def refused() -> bool:
            return (await _request(dashboard.port, _get("/api/overview")))[0] == 503

        await eventually(refused, 5, "a fourth connection refused with 503")
    finally:
        for _, writer in idle:
            writer.close()
    async def served() -> bool:
        return (await _request(dashboard.port, _get("/api/overview")))[0] == 200

    await eventually(served, 5, "requests served again once the idle connections closed")
    await dashboard.stop()


async def test_the_overview_asks_live_members_only_and_shows_what_each_says() -> None:
    from grainery.client.routing import MemberInfo, MembershipSnapshot
    from grainery.silo.dashboard.overview import gather

    members = (
        MemberInfo("a", "h:1", "active", 1.0, "a:1"),
        MemberInfo("b", "h:2", "active", 1.0, "b:1"),  # says it fenced itself
        MemberInfo("c", "h:3", "active", 1.0, "c:1"),  # does not answer
        MemberInfo("d", "h:4", "dead", 1.0, "d:1"),
    )
    asked: list[str] = []

    async def fetch(member: MemberInfo) -> pb.SiloReportResponse:
        asked.append(member.silo_id)
        if member.silo_id == "c":
            await asyncio.Event().wait()  # never answers
        state = "fenced" if member.silo_id == "b" else "active"
        return pb.SiloReportResponse(stats=pb.SiloStatsResponse(
            silo_id=member.silo_id, state=state,
            activations=[pb.TypeCount(grain_type="T", activations=2)],
        ))

    view = await gather(MembershipSnapshot(3, members, "x"), {"a": 0.5, "b": 0.25, "c": 0.25},
                        fetch, served_by="a", timeout=0.2)
    assert sorted(asked) == ["a", "b", "c"]  # the dead one is not asked
    rows = {row["silo_id"]: row for row in view["members"]}
    assert {k: r["state"] for k, r in rows.items()} == {
        "a": "active", "b": "fenced", "c": "active", "d": "dead"}
    assert rows["c"]["error"] == "no answer" and rows["c"]["activations"] is None
    assert rows["d"]["ring_share"] == 0.0 and rows["a"]["ring_share"] == 0.5
    assert view["activations"]["by_type"] == {"T": 4}
    # grainery top draws the same view, members without a report included.
    from grainery.silo.dashboard.top import render

    frame = render(view)
    assert re.search(r"^d +h:4 +dead ", frame, re.M), frame
    assert re.search(r"^c +h:3 +active .*\(no answer\)$", frame, re.M), frame
    assert "ACTIVATIONS  T=4" in frame and "(no calls in the last seconds)" in frame
