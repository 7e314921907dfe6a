"""Failover: 3 silos under steady load, ``kill -9`` one; time until every grain answers again.

Why: a crashed node must cost seconds, not minutes, and must never produce two activations.
Each call carries a short deadline so a stuck call shows up as a failure. A grain has
recovered when it answers after its last failure; the failover time is the slowest grain's
recovery, measured from the kill. Silos run with their default lease and heartbeat.
"""

from __future__ import annotations

import asyncio
import math
import time

from bench.cluster import Cluster, core_unavailable
from bench.common import Measurement, RunConfig, run_async, sweep

NAME = "failover"
DESCRIPTION = "kill -9 one of 3 silos under load: time to full recovery, failed calls"
GRAIN = "BenchCounter"
KEYS = [f"fail-{i}" for i in range(300)]
IN_FLIGHT = 16
CALL_TIMEOUT = 2.0
MAX_WAIT = 30.0  # give up declaring recovery after this long


async def _measure(cfg: RunConfig, cluster: Cluster) -> Measurement:
    from grainery.client import GrainClient

    loop = asyncio.get_running_loop()
    events: list[tuple[float, int, bool]] = []  # (finish time, key index, ok)
    async with GrainClient(*cluster.addresses) as client:

        async def call(i: int) -> None:
            await client.invoke(GRAIN, KEYS[i], "add", [1], timeout=CALL_TIMEOUT)

        prep = await sweep(call, len(KEYS), 64)
        if prep.errors:
            raise RuntimeError(f"activating grains: {prep.error_samples}")

        stop = asyncio.Event()
        seq = 0

        async def worker() -> None:
            nonlocal seq
            while not stop.is_set():
                i = seq % len(KEYS)
                seq += 1
                try:
                    await call(i)
                    ok = True
                except Exception:
                    ok = False
                events.append((loop.time(), i, ok))
                if not ok:
                    await asyncio.sleep(0.01)

        workers = [asyncio.create_task(worker()) for _ in range(IN_FLIGHT)]
        try:
            await asyncio.sleep(max(1.0, cfg.duration / 2))
            victim = cluster.silos[1]
            cfg.log(f"{NAME}: kill -9 {victim.silo_id}")
            await asyncio.to_thread(victim.kill9)
            t_kill = loop.time()
            # wait until every key has answered after its last failure, or MAX_WAIT
            while loop.time() - t_kill < MAX_WAIT:
                await asyncio.sleep(0.5)
                if _recovery(events, t_kill, len(KEYS))[0] is not None and (
                    loop.time() - _last_failure(events, t_kill) > 2 * CALL_TIMEOUT
                ):
                    break
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)

    recovered, failed_keys = _recovery(events, t_kill, len(KEYS))
    after = [e for e in events if e[0] >= t_kill]
    failed = sum(1 for e in after if not e[2])
    last_fail = _last_failure(events, t_kill)
    return Measurement(
        "kill-9-one-of-3",
        IN_FLIGHT,
        {
            "recovery_s": recovered if recovered is not None else math.nan,
            "last_failure_s": last_fail - t_kill if last_fail > t_kill else 0.0,
            "failed_calls": float(failed),
            "calls_after_kill": float(len(after)),
            "grains_with_failures": float(failed_keys),
        },
        {"grains": len(KEYS), "call_timeout_s": CALL_TIMEOUT},
    )


def _last_failure(events: list[tuple[float, int, bool]], t_kill: float) -> float:
    return max((t for t, _, ok in events if not ok and t >= t_kill), default=t_kill)


def _recovery(
    events: list[tuple[float, int, bool]], t_kill: float, n_keys: int
) -> tuple[float | None, int]:
    """Seconds from the kill until the slowest grain answered after its last failure."""
    last_fail: dict[int, float] = {}
    for t, k, ok in events:
        if t >= t_kill and not ok:
            last_fail[k] = t
    answered: dict[int, float] = {}
    for t, k, ok in events:
        if ok and t >= last_fail.get(k, t_kill) and k not in answered:
            answered[k] = t
    if len(answered) < n_keys:
        return None, len(last_fail)
    return max(answered.values()) - t_kill, len(last_fail)


def unavailable() -> str | None:
    return core_unavailable()


def run(cfg: RunConfig) -> list[Measurement]:
    with Cluster(3, f"bench-failover-{time.time_ns()}") as cluster:
        return [run_async(_measure(cfg, cluster), cfg.use_uvloop)]
