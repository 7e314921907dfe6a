"""How much of the machine the benchmark really had: CPU used by anything else meanwhile.

Why: on a 2-core box a test suite or a build running next to the benchmark halves the
figures without any error. The harness measures, per module, the CPU that processes outside
its own process tree used (and hypervisor steal), reports it next to the figures, and can wait
for a quiet machine before starting a module.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any


class CpuMonitor:
    """CPU used by other processes while a block runs: ``with CpuMonitor() as m: ...``.

    A thread polls this process's descendants every ``interval`` seconds and remembers each
    one's last CPU reading, so processes that die before the end (Ray workers, killed silos,
    children reaped by someone else) still count as ours rather than as foreign load.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.result: dict[str, float] = {}
        self._seen: dict[tuple[int, float], tuple[float, float]] = {}  # (first, last) CPU
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                with child.oneshot():
                    key = (child.pid, child.create_time())
                    t = child.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            cpu = t.user + t.system
            first = (
                self._seen[key][0]
                if key in self._seen
                else (
                    cpu
                    if key[1] < self._t0_epoch
                    else 0.0  # born before the block: count the delta
                )
            )
            self._seen[key] = (first, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def __enter__(self) -> CpuMonitor:
        try:
            import psutil
        except ImportError:
            return self  # no psutil: figures are reported unchecked
        self._t0_epoch = time.time()
        self._t0 = time.monotonic()
        self._sys0 = psutil.cpu_times()
        self._self0 = psutil.Process().cpu_times()
        self._poll()
        self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        import psutil

        self._stop.set()
        self._thread.join()
        self._poll()
        wall = time.monotonic() - self._t0
        sys1, self1 = psutil.cpu_times(), psutil.Process().cpu_times()
        busy = _busy(sys1) - _busy(self._sys0)
        steal = getattr(sys1, "steal", 0.0) - getattr(self._sys0, "steal", 0.0)
        ours = (self1.user + self1.system) - (self._self0.user + self._self0.system)
        ours += sum(last - first for first, last in self._seen.values())
        self.result = {
            "foreign_cores": max(0.0, busy - ours) / wall if wall > 0 else 0.0,
            "steal_cores": steal / wall if wall > 0 else 0.0,
            "cpus": float(os.cpu_count() or 1),
        }

    @property
    def disturbance(self) -> float:
        """Cores' worth of CPU the block did not get: other processes plus hypervisor steal."""
        return self.result.get("foreign_cores", 0.0) + self.result.get("steal_cores", 0.0)


def _busy(t: Any) -> float:
    """Machine-wide non-idle CPU seconds, steal and guest excluded."""
    idle = t.idle + getattr(t, "iowait", 0.0)
    extra = getattr(t, "steal", 0.0) + getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return float(sum(t) - idle - extra)


def wait_quiet(max_wait: float, threshold: float = 0.15, log: Any = None) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores; returns it."""
    deadline = time.monotonic() + max_wait
    while True:
        with CpuMonitor() as mon:
            time.sleep(1.0)
        load = mon.result.get("foreign_cores", 0.0)
        if load < threshold or time.monotonic() >= deadline:
            return load
        if callable(log):
            log(f"machine busy ({load:.2f} cores used by other processes); waiting")
