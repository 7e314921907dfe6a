"""Shared pieces of the benchmark suite: the module interface, the load generator, helpers.

Standard library only, so that ``bench.grpc_echo`` can run in venvs holding just grpcio.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
LEVELS: tuple[int, ...] = (1, 16, 64, 256)


@dataclass
class RunConfig:
    """Knobs every benchmark module receives; ``quick`` trades precision for time."""

    quick: bool = False
    duration: float = 5.0  # measured seconds per concurrency level
    warmup: float = 1.0  # unmeasured seconds before each level
    levels: tuple[int, ...] = LEVELS
    use_uvloop: bool = True  # client-side event loop, to match the silo's
    verbose: bool = False

    def log(self, msg: str) -> None:
        """Progress lines go to stderr so stdout stays a clean table."""
        print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Measurement:
    """One figure set: a case (e.g. ``warm-1silo``) at a concurrency (or None), its metrics."""

    case: str
    in_flight: int | None
    metrics: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadResult:
    """Outcome of one closed-loop run; latencies in seconds."""

    calls: int
    errors: int
    elapsed: float
    latencies: list[float]
    error_samples: list[str]

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        """The standard figures: calls/s, p50 and p99 in milliseconds, errors."""
        return {
            "calls_per_s": self.rate,
            "p50_ms": percentile(self.latencies, 50) * 1e3,
            "p99_ms": percentile(self.latencies, 99) * 1e3,
            "errors": float(self.errors),
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no numpy, so it runs anywhere); NaN for no data."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """Median that ignores NaN (a repetition that produced no figure)."""
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        return math.nan
    mid = len(clean) // 2
    return clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2


async def closed_loop(
    call: Callable[[int], Awaitable[object]],
    in_flight: int,
    duration: float,
    warmup: float,
) -> LoadResult:
    """Keep ``in_flight`` calls outstanding; measure only calls that finish in the window.

    ``call(i)`` gets a global sequence number so callers can spread work over keys. Errors are
    counted, not raised: a benchmark reports failures instead of dying on the first one.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    stop_at = measure_from + duration
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    seq = 0
    perf = time.perf_counter

    async def worker() -> None:
        nonlocal errors, seq
        while True:
            now = loop.time()
            if now >= stop_at:
                return
            i = seq
            seq += 1
            t0 = perf()
            try:
                await call(i)
                ok = True
            except Exception as exc:
                ok = False
                if len(samples) < 5:
                    samples.append(f"{type(exc).__name__}: {exc}"[:300])
            t1 = perf()
            end = loop.time()
            if measure_from <= end < stop_at:
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1
            if not ok:
                await asyncio.sleep(0.01)  # do not spin on a dead endpoint

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return LoadResult(len(latencies), errors, duration, latencies, samples)


async def sweep(call: Callable[[int], Awaitable[object]], count: int, in_flight: int) -> LoadResult:
    """Make exactly ``count`` calls (``call(0..count-1)``), ``in_flight`` at a time.

    For work that is used up by doing it once, such as activating a grain for the first time:
    the rate is count over the wall time of the whole sweep.
    """
    latencies: list[float] = []
    samples: list[str] = []
    errors = 0
    nxt = 0
    perf = time.perf_counter

    async def worker() -> None:
        nonlocal errors, nxt
        while nxt < count:
            i = nxt
            nxt += 1
            t0 = perf()
            try:
                await call(i)
            except Exception as exc:
                errors += 1
                if len(samples) < 5:
                    samples.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append(perf() - t0)

    start = perf()
    await asyncio.gather(*(worker() for _ in range(min(in_flight, count))))
    return LoadResult(len(latencies), errors, perf() - start, latencies, samples)


def run_async(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run a coroutine on a fresh loop, uvloop when asked for and installed."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    """A loopback port nobody listens on right now (the usual bind-to-0 trick)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """Poll until something accepts TCP connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return True
        time.sleep(0.05)
    return False


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process from /proc (Linux); NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    # after the ")" field 0 is state (field 3 overall): utime/stime are fields 14/15 overall
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_bytes(pid: int) -> float:
    """Resident set size of a process from /proc (Linux); NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.nan
