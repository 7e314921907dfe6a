"""Durable execution (issue 13): what recording a step costs, next to what it replaces.

Same run, same silo: (1) no-op durable steps per second, 64 agents running 50-step plans at
once (every step is one fenced journal append); (2) per operation, one agent at a time: a
recorded no-op step against a ``write_state`` (both one fenced Lua script in Redis), 50 of
each inside one call; (3) a 5-step workflow whose steps call another grain, end to end,
against the same 5 calls made by a plain method. Targets (issue 13): >= 2,000 steps/s per
silo; a step <= 2x a write_state.
"""

from __future__ import annotations

import time

from bench.cluster import Cluster, core_unavailable
from bench.common import Measurement, RunConfig, closed_loop, run_async

NAME = "durable"
DESCRIPTION = "durable steps/s, a step vs write_state, a 5-step workflow vs 5 plain calls"
PLAN_STEPS = 50
IN_FLIGHT = 64
AGENTS = [f"agent-{i}" for i in range(IN_FLIGHT)]


def unavailable() -> str | None:
    return core_unavailable()


async def _measure(cfg: RunConfig, cluster: Cluster) -> list[Measurement]:
    from grainery import GrainClient

    out: list[Measurement] = []
    async with GrainClient(*cluster.addresses) as client:
        async def plan(i: int) -> None:
            await client.get_grain("BenchAgent", AGENTS[i % IN_FLIGHT]).steps(PLAN_STEPS)

        cfg.log(f"{NAME}: {PLAN_STEPS}-step no-op plans, {IN_FLIGHT} agents at once")
        res = await closed_loop(plan, IN_FLIGHT, cfg.duration, cfg.warmup)
        metrics = res.metrics()
        metrics["steps_per_s"] = metrics["calls_per_s"] * PLAN_STEPS
        out.append(Measurement("noop-steps", IN_FLIGHT, metrics, {"errors": res.error_samples}))

        for case, method in (("step", "steps"), ("write_state", "writes")):
            async def one(i: int, method: str = method) -> None:
                await client.get_grain("BenchAgent", f"solo-{method}").call(method, PLAN_STEPS)

            cfg.log(f"{NAME}: {PLAN_STEPS} x {case} per call, 1 in flight")
            res = await closed_loop(one, 1, cfg.duration, cfg.warmup)
            metrics = res.metrics()
            metrics["per_op_us"] = metrics["p50_ms"] * 1e3 / PLAN_STEPS
            out.append(Measurement(f"per-op-{case}", 1, metrics, {"errors": res.error_samples}))

        for case, method in (("workflow-5-steps", "workflow5"), ("plain-5-calls", "plain5")):
            async def five(i: int, method: str = method) -> None:
                await client.get_grain("BenchAgent", f"five-{method}").call(method, "c-1")

            cfg.log(f"{NAME}: {case}, 1 in flight")
            res = await closed_loop(five, 1, cfg.duration, cfg.warmup)
            out.append(Measurement(case, 1, res.metrics(), {"errors": res.error_samples}))
    return out


def run(cfg: RunConfig) -> list[Measurement]:
    with Cluster(1, f"bench-durable-{time.time_ns()}",
                 extra=["--grains", "bench.durable_grains"]) as cluster:
        return run_async(_measure(cfg, cluster), cfg.use_uvloop)
