"""Reminders at scale (issue 11): 100,000 reminders with a 60 s period across 3 silos.

Figures, all from one cluster (valkey + 3 silos on this machine):
- register rate: reminders registered per second by grain code (10 per grain, 64 calls in
  flight), the path ``register_reminder`` takes (validation, one Lua script);
- idle cost: Redis commands per second while nothing is due, with 0 reminders and with all of
  them registered (INFO ``total_commands_processed`` deltas over a quiet window), and the
  reminder service's own share (its poll is the only ``ZRANGEBYSCORE`` while nothing is due,
  counted by INFO commandstats; each poll is one EVALSHA running TIME and ZRANGEBYSCORE, so
  its cost is 3 x that count); the rest is the cluster's other work (membership, ...);
- firing: part of the reminders are re-registered so that their first ticks are spread evenly
  at about 1,000 per second; lateness = the hook's wall-clock time minus the tick's scheduled
  time, recorded by every tick (p50/p99);
- silo CPU (user + system, from /proc via psutil) over the idle and the firing windows, in
  cores (1.0 = one core busy).

``--quick``: 12,000 of the 100,000 fire (over 12 s), 5 s idle windows (about a minute and a
half in all). Full: 60,000 fire over 60 s, 10 s idle windows.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from bench.cluster import Silo, Valkey, core_unavailable, sum_metric
from bench.common import Measurement, RunConfig, percentile, run_async, sweep

NAME = "reminders"
DESCRIPTION = "100k reminders, 60 s period, 3 silos: register rate, idle Redis cost, lateness"
MAX_REPEATS = 1
PERIOD = 60.0
PER_GRAIN = 10
DORMANT_DUE = 3600.0  # registered reminders that are not due during the benchmark
FIRING_RATE = 1000  # first ticks per second in the firing window
IN_FLIGHT = 64


def unavailable() -> str | None:
    return core_unavailable()


def run(cfg: RunConfig) -> list[Measurement]:
    return run_async(_run(cfg), cfg.use_uvloop)


class _Cluster:
    """valkey + silos hosting bench.reminder_grains; the grains find the store through
    GRAINERY_BENCH_STORE_URL (set before the silos are spawned)."""

    def __init__(self, workdir: Path, silos: int) -> None:
        self.valkey = Valkey(workdir)
        os.environ["GRAINERY_BENCH_STORE_URL"] = self.valkey.url
        name = f"bench-rem-{uuid.uuid4().hex[:6]}"
        self.silos: list[Silo] = []
        try:
            self.silos = [Silo(workdir, self.valkey.url, name, grains="bench.reminder_grains",
                               extra=["--idle-timeout", "600"]) for _ in range(silos)]
            for silo in self.silos:
                silo.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for silo in self.silos:
            silo.terminate(30.0)
        self.valkey.stop()


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


async def _commands(redis: object) -> tuple[int, int]:
    """(total commands processed, ZRANGEBYSCORE calls) so far."""
    stats = await redis.info("stats")  # type: ignore[attr-defined]
    commandstats = await redis.info("commandstats")  # type: ignore[attr-defined]
    zrange = commandstats.get("cmdstat_zrangebyscore", {}).get("calls", 0)
    return int(stats["total_commands_processed"]), int(zrange)


async def _idle_window(redis: object, pids: list[int], seconds: float) -> dict[str, float]:
    total0, polls0 = await _commands(redis)
    cpu0, wall0 = _cpu_seconds(pids), time.monotonic()
    await asyncio.sleep(seconds)
    total1, polls1 = await _commands(redis)
    cpu1, wall1 = _cpu_seconds(pids), time.monotonic()
    elapsed = wall1 - wall0
    # The two INFO calls of each sample are ours, not the cluster's.
    total = (total1 - total0 - 2) / elapsed
    service = 3 * (polls1 - polls0) / elapsed
    return {"redis_cmds_per_s": total, "reminder_service_cmds_per_s": service,
            "other_cmds_per_s": total - service, "silo_cpu_cores": (cpu1 - cpu0) / elapsed}


async def _run(cfg: RunConfig) -> list[Measurement]:
    import tempfile

    import redis.asyncio as aioredis

    from bench.reminder_grains import LATENESS_KEY
    from grainery import GrainClient

    total = 100_000
    firing = 12_000 if cfg.quick else 60_000
    idle_seconds = 5.0 if cfg.quick else 10.0
    grains = total // PER_GRAIN
    firing_grains = firing // PER_GRAIN
    workdir = Path(tempfile.mkdtemp(prefix="grainery-bench-rem-"))
    cluster = _Cluster(workdir, 3)
    out: list[Measurement] = []
    try:
        redis = aioredis.Redis.from_url(cluster.valkey.url)
        pids = [s.pid for s in cluster.silos]
        async with GrainClient(*[s.address for s in cluster.silos]) as client:
            await client.wait_for_members(3)
            await asyncio.sleep(2.0)  # let the ring settle before the quiet window
            cfg.log(f"{NAME}: idle window, no reminders ({idle_seconds:.0f}s)")
            empty = await _idle_window(redis, pids, idle_seconds)
            out.append(Measurement("idle-0-reminders", None, empty))

            def ref(i: int) -> object:
                return client.get_grain("BenchReminder", f"rem-{i}")

            cfg.log(f"{NAME}: registering {total:,} reminders ({grains:,} grains)")
            reg = await sweep(lambda i: ref(i).remind_many(  # type: ignore[attr-defined]
                PER_GRAIN, DORMANT_DUE, 0.0, PERIOD, 0.0), grains, IN_FLIGHT)
            if reg.errors:
                raise RuntimeError(f"registering: {reg.error_samples}")
            rate = grains * PER_GRAIN / reg.elapsed
            out.append(Measurement("register", IN_FLIGHT, {
                "reminders_per_s": rate, "p50_ms": percentile(reg.latencies, 50) * 1e3,
                "p99_ms": percentile(reg.latencies, 99) * 1e3, "reminders": float(total)}))
            await asyncio.sleep(1.0)
            cfg.log(f"{NAME}: idle window, {total:,} reminders, none due ({idle_seconds:.0f}s)")
            loaded = await _idle_window(redis, pids, idle_seconds)
            out.append(Measurement("idle-all-reminders", None, {**loaded,
                                                                 "reminders": float(total)}))

            # Arm: the first `firing` reminders, first ticks spread evenly at FIRING_RATE/s.
            window = firing / FIRING_RATE
            fire_at = time.time() + 1.5 * firing / rate + 3.0
            slot = 1.0 / FIRING_RATE
            await redis.delete(LATENESS_KEY)
            cfg.log(f"{NAME}: arming {firing:,} reminders to fire over {window:.0f}s")
            armed = await sweep(lambda g: ref(g).remind_many(  # type: ignore[attr-defined]
                PER_GRAIN, g * slot, firing_grains * slot, PERIOD, fire_at),
                firing_grains, IN_FLIGHT)
            if armed.errors:
                raise RuntimeError(f"arming: {armed.error_samples}")
            if time.time() > fire_at:
                cfg.log(f"{NAME}: WARNING arming ended after the first tick was due")
            await asyncio.sleep(max(0.0, fire_at - time.time()))
            cpu0, wall0 = _cpu_seconds(pids), time.monotonic()
            await asyncio.sleep(window)
            cpu1, wall1 = _cpu_seconds(pids), time.monotonic()
            await asyncio.sleep(3.0)  # the last ticks and the flushes land
            lateness = [float(v) for v in await redis.lrange(LATENESS_KEY, 0, -1)]
            first = sorted(lateness)
            samples = [s.metrics() for s in cluster.silos]
            outcomes = {o: sum(sum_metric(m, "grainery_reminder_ticks_total", outcome=o)
                               for m in samples)
                        for o in ("ok", "failed", "retried", "undeliverable")}
            out.append(Measurement("firing", None, {
                "firings_per_s": len(lateness) / window,
                "lateness_p50_ms": percentile(first, 50),
                "lateness_p99_ms": percentile(first, 99),
                "lateness_max_ms": first[-1] if first else float("nan"),
                "ticks": float(len(lateness)),
                "silo_cpu_cores": (cpu1 - cpu0) / (wall1 - wall0),
                "ticks_not_ok": outcomes["failed"] + outcomes["retried"]
                + outcomes["undeliverable"],
            }, {"expected_ticks": firing}))
        await redis.aclose()
    finally:
        cluster.stop()
    return out
