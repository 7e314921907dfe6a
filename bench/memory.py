"""Memory: RSS of one silo holding 10k (and, in the full run, 100k) active small grains.

Why: an agent platform keeps many mostly-idle grains resident; the per-grain overhead decides
how many fit on a node. The floor for a resident grain (small dict, lock, slotted object) is
about 0.9 KB, so anything far above that is overhead worth finding. A short warm-call probe at
each size shows whether a large resident set slows calls down (e.g. garbage-collector passes
over every grain object).
"""

from __future__ import annotations

import asyncio
import time

from bench.cluster import Cluster, core_unavailable, sum_metric
from bench.common import (
    Measurement,
    RunConfig,
    closed_loop,
    percentile,
    proc_rss_bytes,
    run_async,
    sweep,
)

NAME = "memory"
DESCRIPTION = "silo RSS with 10k / 100k active small grains"
GRAIN = "BenchCounter"
MAX_REPEATS = 1  # 100k activations take a while, and RSS barely varies between runs
MIB = 2**20
PROBE_IN_FLIGHT = 16


def unavailable() -> str | None:
    return core_unavailable()


async def _settled_rss(pid: int) -> float:
    """RSS after the silo has had a moment to finish background work."""
    await asyncio.sleep(1.0)
    return proc_rss_bytes(pid)


async def _measure(cfg: RunConfig, cluster: Cluster) -> list[Measurement]:
    from grainery.client import GrainClient

    silo = cluster.silos[0]
    targets = (10_000,) if cfg.quick else (10_000, 100_000)
    out: list[Measurement] = []
    async with GrainClient(silo.address) as client:

        async def touch(i: int) -> None:
            await client.get_grain(GRAIN, f"mem-{i}").touch()

        async def probe_call(i: int) -> None:
            await touch(i % 50)

        async def probe() -> dict[str, float]:
            """Warm calls on 50 grains: does a big resident set slow calls down (GC, dicts)?"""
            res = await closed_loop(probe_call, PROBE_IN_FLIGHT, cfg.duration, cfg.warmup)
            return {
                "probe_calls_per_s": res.rate,
                "probe_p50_ms": percentile(res.latencies, 50) * 1e3,
                "probe_p99_ms": percentile(res.latencies, 99) * 1e3,
            }

        await sweep(touch, 50, 8)  # code paths, connections and caches exercised first
        base = await _settled_rss(silo.pid)
        out.append(Measurement("empty-silo", None, {"rss_mib": base / MIB, **await probe()}))
        done = 50
        for target in targets:
            cfg.log(f"{NAME}: activating up to {target} grains")
            t0 = time.monotonic()

            async def touch_from(i: int, start: int = done) -> None:
                await touch(start + i)

            res = await sweep(touch_from, target - done, 128)
            elapsed = time.monotonic() - t0
            done = target
            rss = await _settled_rss(silo.pid)
            active = sum_metric(await asyncio.to_thread(silo.metrics), "grainery_activations")
            probed = await probe()
            out.append(
                Measurement(
                    f"{target // 1000}k-grains",
                    None,
                    {
                        "rss_mib": rss / MIB,
                        "above_empty_mib": (rss - base) / MIB,
                        "bytes_per_grain": (rss - base) / target,
                        "active_reported": active,
                        "activations_per_s": res.calls / elapsed if elapsed else 0.0,
                        "errors": float(res.errors),
                        **probed,
                    },
                    {"errors": res.error_samples} if res.errors else {},
                )
            )
    out.append(
        Measurement("valkey", None, {"rss_mib": proc_rss_bytes(cluster.valkey.pid) / MIB})
        if cluster.valkey
        else Measurement("valkey", None, {})
    )
    return out


def run(cfg: RunConfig) -> list[Measurement]:
    with Cluster(1, f"bench-memory-{time.time_ns()}") as cluster:
        return run_async(_measure(cfg, cluster), cfg.use_uvloop)
