"""How much of the machine the benchmark really had: CPU used by anything else meanwhile.

Why: on a 2-core box a test suite or a build running next to the benchmark halves the
figures without any error. The harness measures, per module, the CPU that processes outside
its own process tree used (and hypervisor steal), reports it next to the figures, and can wait
for a quiet machine before starting a module.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass
class CpuSample:
    wall: float
    busy: float  # machine-wide non-idle CPU seconds, steal excluded
    steal: float
    ours: float  # CPU seconds of this process tree (live and reaped)


def _ours() -> float:
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # a live child's own time, plus children it has already reaped
        total += c.user + c.system + c.children_user + c.children_system
    return float(total)


def sample() -> CpuSample | None:
    """A snapshot, or None without psutil (the figures are then reported unchecked)."""
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    steal = float(getattr(t, "steal", 0.0))
    idle = t.idle + getattr(t, "iowait", 0.0)
    busy = float(sum(t)) - idle - steal - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return CpuSample(time.monotonic(), busy, steal, _ours())


def foreign(before: CpuSample | None, after: CpuSample | None) -> dict[str, float]:
    """Cores' worth of CPU used by other processes, and stolen, between two samples."""
    if before is None or after is None or after.wall <= before.wall:
        return {}
    wall = after.wall - before.wall
    other = max(0.0, (after.busy - before.busy) - (after.ours - before.ours))
    return {
        "foreign_cores": other / wall,
        "steal_cores": (after.steal - before.steal) / wall,
        "cpus": float(os.cpu_count() or 1),
    }


def wait_quiet(max_wait: float, threshold: float = 0.15, log: object = None) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores; returns it."""
    deadline = time.monotonic() + max_wait
    load = float("nan")
    while True:
        a = sample()
        time.sleep(1.0)
        b = sample()
        load = foreign(a, b).get("foreign_cores", 0.0)
        if load < threshold or time.monotonic() >= deadline:
            return load
        if callable(log):
            log(f"machine busy ({load:.2f} cores used by other processes); waiting")
