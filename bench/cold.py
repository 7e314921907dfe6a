"""Cold calls: every call activates a grain whose ~1 KB of state is already in Redis.

Why: agents are called after long idle gaps, so activation (directory register, state load,
``on_activate``) is on the user's critical path. State is written through the grains
themselves (format-agnostic), the silo is then stopped gracefully (so every grain deactivates)
and a fresh silo serves the cold pass. The same keys are then called again, now warm, at the
same concurrency: the cold/warm ratio comes from one cluster and one run.
"""

from __future__ import annotations

import time

from bench.cluster import Cluster, core_unavailable
from bench.common import Measurement, RunConfig, run_async, sweep

NAME = "cold"
DESCRIPTION = "calls that each activate a grain with ~1 KB of stored state"
GRAIN = "BenchCounter"
BLOB = "s" * 1024


def unavailable() -> str | None:
    return core_unavailable()


def _keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


async def _fill(address: str, keys: list[str]) -> None:
    from grainery.client import GrainClient

    async with GrainClient(address) as client:

        async def fill(i: int) -> None:
            await client.get_grain(GRAIN, keys[i]).fill(BLOB)

        res = await sweep(fill, len(keys), 64)
        if res.errors:
            raise RuntimeError(f"writing state: {res.errors} errors, e.g. {res.error_samples}")


async def _cold_then_warm(
    cfg: RunConfig, address: str, plan: list[tuple[int, list[str]]]
) -> list[Measurement]:
    from grainery.client import GrainClient

    out: list[Measurement] = []
    async with GrainClient(address) as client:
        # warm the client and the silo's connections on other keys first
        async def touch(i: int) -> None:
            await client.get_grain(GRAIN, f"cold-warmup-{i % 64}").add(0)

        await sweep(touch, 500, 16)
        for n, keys in plan:

            async def size(i: int, keys: list[str] = keys) -> None:
                got = await client.get_grain(GRAIN, keys[i]).size()
                if got != len(BLOB):
                    raise RuntimeError(f"state not loaded: size {got}")

            for case in ("cold", "warm-same-keys"):
                cfg.log(f"{NAME}: {case}, {len(keys)} grains, {n} in flight")
                res = await sweep(size, len(keys), n)
                out.append(
                    Measurement(
                        case,
                        n,
                        res.metrics(),
                        {"grains": len(keys)}
                        | ({"errors": res.error_samples} if res.errors else {}),
                    )
                )
    return out


def run(cfg: RunConfig) -> list[Measurement]:
    n_serial, n_parallel = (100, 2000) if cfg.quick else (300, 8000)
    plan = [(1, _keys("cold-a", n_serial)), (64, _keys("cold-b", n_parallel))]
    with Cluster(1, f"bench-cold-{time.time_ns()}") as cluster:
        cfg.log(f"{NAME}: writing ~1 KB state for {n_serial + n_parallel} grains (untimed)")
        run_async(_fill(cluster.addresses[0], plan[0][1] + plan[1][1]), cfg.use_uvloop)
        cluster.silos[0].terminate()  # graceful: deactivates every grain
        fresh = cluster.add_silo()
        return run_async(_cold_then_warm(cfg, fresh.address, plan), cfg.use_uvloop)
