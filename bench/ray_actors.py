"""Baseline: the same small workload on Ray actors, measured in the same run as Grainery.

Why: Ray is what many users would reach for instead of a grain server. Three figures:
- ``ray-direct``: one async actor with a small dict state, ``add(n)`` through a handle the
  driver holds, at each concurrency level;
- ``ray-get_if_exists``: the virtual-actor pattern, ``Actor.options(name=key,
  get_if_exists=True).remote()`` on every call, then ``add(n)``; the named actor is created
  beforehand and is one process like the direct case, so the difference is the per-call
  look-up, not actor creation or extra parallelism;
- ``ray-idle``: RSS of an idle Ray runtime (the processes ``ray.init`` starts).
Ray's own start-up and actor creation are outside the timed region; Ray gets ``num_cpus=2``
and no dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from bench.common import REPO_ROOT, Measurement, RunConfig, closed_loop

NAME = "ray"
DESCRIPTION = "Ray async actor: direct handle, get_if_exists pattern, idle runtime RSS"
NAMED_ACTORS = 1  # same single actor process as the direct case: only the look-up differs


def unavailable() -> str | None:
    """Ray installs only with the bench extra."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return f"ray not installed (pip install -e '.[bench]'): {exc}"
    try:
        import psutil  # noqa: F401
    except ImportError as exc:
        return f"psutil not installed: {exc}"
    return None


def _actor_class() -> Any:
    """Build the actor class in a function so Ray pickles it by value (no import on workers)."""
    import ray

    @ray.remote(num_cpus=0)
    class CounterActor:
        def __init__(self) -> None:
            self.state: dict[str, int] = {}

        async def add(self, n: int) -> int:
            self.state["value"] = self.state.get("value", 0) + n
            return self.state["value"]

    return CounterActor


def _runtime_memory() -> dict[str, float]:
    """Sum RSS/PSS of every process ray.init started (descendants of this driver)."""
    import psutil

    rss = pss = 0.0
    procs = 0
    for p in psutil.Process().children(recursive=True):
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0.0)
        procs += 1
    return {"rss_mib": rss / 2**20, "pss_mib": pss / 2**20, "processes": float(procs)}


async def _sweep(cfg: RunConfig, actor_cls: Any) -> list[Measurement]:
    out: list[Measurement] = []
    direct = actor_cls.remote()
    await direct.add.remote(0)
    for _ in range(100):
        await direct.add.remote(1)

    async def call_direct(_: int) -> None:
        await direct.add.remote(1)

    for n in cfg.levels:
        cfg.log(f"{NAME}: direct handle, {n} in flight")
        res = await closed_loop(call_direct, n, cfg.duration, cfg.warmup)
        out.append(Measurement("ray-direct", n, res.metrics()))

    names = [f"grain-{i}" for i in range(NAMED_ACTORS)]
    # Create outside the timed region, and hold the handles: a named actor that is not
    # detached is garbage-collected with its last handle, and every call would then pay
    # for a new actor process (~0.4 s) instead of a look-up.
    keep = [actor_cls.options(name=name, get_if_exists=True).remote() for name in names]
    for handle in keep:
        await handle.add.remote(0)

    async def call_virtual(i: int) -> None:
        handle = actor_cls.options(name=names[i % len(names)], get_if_exists=True).remote()
        await handle.add.remote(1)

    levels = (1, 64) if cfg.quick else cfg.levels
    for n in levels:
        cfg.log(f"{NAME}: get_if_exists pattern, {n} in flight")
        res = await closed_loop(call_virtual, n, cfg.duration, cfg.warmup)
        out.append(Measurement("ray-get_if_exists", n, res.metrics()))
    del keep
    return out


def run(cfg: RunConfig) -> list[Measurement]:
    """One repetition: start Ray (untimed), measure idle memory, sweep, shut Ray down."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
    )
    cfg.log(f"{NAME}: starting Ray (not timed)")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="grainery-bench",
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        time.sleep(3.0 if not cfg.quick else 2.0)  # let the runtime settle before measuring
        mem = _runtime_memory()
        out = [Measurement("ray-idle", None, mem, {"ray": ray.__version__})]
        # Ray's ObjectRef is awaitable from the plain asyncio loop; keep Ray on it.
        out.extend(asyncio.run(_sweep(cfg, _actor_class())))
        return out
    finally:
        ray.shutdown()
