"""Warm calls: Python client -> grain method on an active grain, 1 silo and 3 silos.

Why: this is the steady-state call path (client routing, one gRPC hop, gateway, catalog,
turn-based execution, JSON codec) and is compared with the bare gRPC echo and Ray in the same
run. ``add(1)`` mirrors the Ray actor (small dict state, no I/O). Calls spread over 1024
pre-activated grains, so concurrent calls rarely queue behind one grain's turn.
"""

from __future__ import annotations

import time

from bench.cluster import Cluster, core_unavailable
from bench.common import Measurement, RunConfig, closed_loop, proc_cpu_seconds, run_async, sweep

NAME = "warm"
DESCRIPTION = "warm grain calls add(1), 1 silo and 3 silos, vs echo and Ray"
GRAIN = "BenchCounter"
KEYS = [f"warm-{i}" for i in range(1024)]


def unavailable() -> str | None:
    return core_unavailable()


async def measure(
    cfg: RunConfig, cluster: Cluster, case: str, streamed: bool = True
) -> list[Measurement]:
    """Activate the key set (untimed), then one closed loop per concurrency level.
    ``streamed``: the client's default multiplexed call stream, or one unary RPC per call
    (what a client in another language does)."""
    from grainery.client import GrainClient

    out: list[Measurement] = []
    pids = [s.pid for s in cluster.silos]
    async with GrainClient(*cluster.addresses, streamed=streamed) as client:

        async def activate(i: int) -> None:
            await client.get_grain(GRAIN, KEYS[i]).add(0)

        prep = await sweep(activate, len(KEYS), 64)
        if prep.errors:
            raise RuntimeError(f"activating {len(KEYS)} grains: {prep.error_samples}")

        async def call(i: int) -> None:
            await client.get_grain(GRAIN, KEYS[i % len(KEYS)]).add(1)

        for n in cfg.levels:
            cfg.log(f"{NAME}: {case}, {n} in flight")
            cpu0 = sum(proc_cpu_seconds(p) for p in pids)
            client_cpu0 = time.process_time()
            t0 = time.monotonic()
            res = await closed_loop(call, n, cfg.duration, cfg.warmup)
            wall = time.monotonic() - t0
            metrics = res.metrics()
            total_calls = res.rate * wall  # CPU covers warm-up too: scale calls to match
            if total_calls > 0:
                silo_cpu = sum(proc_cpu_seconds(p) for p in pids) - cpu0
                metrics["silo_cpu_us_per_call"] = silo_cpu / total_calls * 1e6
                client_cpu = time.process_time() - client_cpu0
                metrics["client_cpu_us_per_call"] = client_cpu / total_calls * 1e6
            out.append(Measurement(case, n, metrics, {"errors": res.error_samples}))
    return out


def run(cfg: RunConfig) -> list[Measurement]:
    out: list[Measurement] = []
    for silos in (1, 3):
        case = f"warm-{silos}silo" + ("s" if silos > 1 else "")
        cfg.log(f"{NAME}: starting {silos} silo(s)")
        with Cluster(silos, f"bench-warm-{silos}-{time.time_ns()}") as cluster:
            out.extend(run_async(measure(cfg, cluster, case), cfg.use_uvloop))
            if silos == 1:
                unary = measure(cfg, cluster, case + "-unary", streamed=False)
                out.extend(run_async(unary, cfg.use_uvloop))
    return out
