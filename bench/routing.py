"""Routing: the share of calls a silo had to forward, at steady state and right after a join.

Why: every extra hop roughly halves throughput and doubles latency, so the client should reach
the owning silo directly. The figure comes from the silos' own counter
``grainery_gateway_calls_total{route="forwarded"}`` divided by the calls the client made.
"""

from __future__ import annotations

import asyncio
import math
import time

from bench.cluster import Cluster, core_unavailable, sum_metric
from bench.common import Measurement, RunConfig, closed_loop, run_async, sweep

NAME = "routing"
DESCRIPTION = "share of calls forwarded between silos: steady state, after a silo joins"
GRAIN = "BenchCounter"
KEYS = [f"route-{i}" for i in range(2000)]
IN_FLIGHT = 16


def unavailable() -> str | None:
    return core_unavailable()


def _forwarded(cluster: Cluster) -> float:
    return sum(
        sum_metric(s.metrics(), "grainery_gateway_calls_total", route="forwarded")
        for s in cluster.silos
        if s.proc.poll() is None
    )


async def _measure(cfg: RunConfig, cluster: Cluster) -> list[Measurement]:
    from grainery.client import GrainClient

    out: list[Measurement] = []
    window = cfg.duration
    async with GrainClient(*cluster.addresses) as client:

        async def call(i: int) -> None:
            await client.get_grain(GRAIN, KEYS[i % len(KEYS)]).add(1)

        prep = await sweep(call, len(KEYS), 64)
        if prep.errors:
            raise RuntimeError(f"activating grains: {prep.error_samples}")
        await closed_loop(call, IN_FLIGHT, 1.0, 0.0)  # let location caches settle

        # steady state: 2 silos, all grains active
        cfg.log(f"{NAME}: steady state")
        before = await asyncio.to_thread(_forwarded, cluster)
        res = await closed_loop(call, IN_FLIGHT, window, 0.0)
        after = await asyncio.to_thread(_forwarded, cluster)
        out.append(_row("steady", res.calls + res.errors, after - before, res.errors))

        # a third silo joins while the load runs; windows measured from when it is ready
        cfg.log(f"{NAME}: a silo joins under load")
        stop = asyncio.Event()
        counts = {"calls": 0, "errors": 0}

        async def load() -> None:
            async def one(i: int) -> None:
                try:
                    await call(i)
                    counts["calls"] += 1
                except Exception:
                    counts["errors"] += 1
                    raise

            while not stop.is_set():
                await closed_loop(one, IN_FLIGHT, 0.25, 0.0)

        task = asyncio.create_task(load())
        try:
            await asyncio.sleep(0.5)
            joined = await asyncio.to_thread(cluster.add_silo)
            t_join = time.monotonic()
            for label in ("after-join-0", "after-join-1"):
                c0, e0 = counts["calls"], counts["errors"]
                f0 = await asyncio.to_thread(_forwarded, cluster)
                await asyncio.sleep(window)
                f1 = await asyncio.to_thread(_forwarded, cluster)
                calls = counts["calls"] - c0 + counts["errors"] - e0
                row = _row(label, calls, f1 - f0, counts["errors"] - e0)
                row.info["window_s_after_ready"] = round(time.monotonic() - t_join, 2)
                out.append(row)
        finally:
            stop.set()
            await task
        out[-1].info["joined"] = joined.silo_id
    return out


def _row(case: str, calls: int, forwarded: float, errors: int) -> Measurement:
    share = forwarded / calls if calls else math.nan
    return Measurement(
        case,
        IN_FLIGHT,
        {"forwarded_share": share, "calls": float(calls), "errors": float(errors)},
    )


def run(cfg: RunConfig) -> list[Measurement]:
    with Cluster(2, f"bench-routing-{time.time_ns()}") as cluster:
        return run_async(_measure(cfg, cluster), cfg.use_uvloop)
