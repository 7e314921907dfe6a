"""Run the benchmark suite: ``python -m bench.run [--quick] [--only warm,grpc_echo]``.

Why one harness: every figure is reported next to baselines measured in the same run on the
same machine (bare gRPC echo, Ray), as medians over repetitions, with the targets of issue 6.
Repetitions are interleaved (all modules once, then again) so machine drift does not favour
one module. Output: a table on stdout, ``bench/results/{latest,quick}.json`` and PNG plots.
Benchmarks only report; nothing here asserts a wall-clock time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import operator
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench import machine
from bench.common import RESULTS_DIR, Measurement, RunConfig, have_uvloop, median

# Order matters only for readability: baselines first.
MODULES = [
    "bench.grpc_echo",
    "bench.ray_actors",
    "bench.warm",
    "bench.pipeline",
    "bench.tracing",
    "bench.cold",
    "bench.routing",
    "bench.memory",
    "bench.failover",
    "bench.reminders",
    "bench.durable",
    "bench.streams",
]

Key = tuple[str, str, int | None]  # (benchmark, case, in_flight)
BUSY_CORES = 0.2  # other processes using more than this during a module skew its figures


@dataclass(frozen=True)
class Ref:
    """A figure in the results: benchmark, case, in-flight level, metric."""

    bench: str
    case: str
    in_flight: int | None
    metric: str

    def get(self, table: dict[Key, dict[str, float]]) -> float:
        return table.get((self.bench, self.case, self.in_flight), {}).get(self.metric, math.nan)


@dataclass(frozen=True)
class Check:
    """A target from issue 6: ``num / den`` (or ``num`` alone) compared with ``target``."""

    label: str
    num: Ref
    den: Ref | None
    op: str  # ">=" or "<="
    target: float | None  # None = informational ratio, no target

    def value(self, table: dict[Key, dict[str, float]]) -> float:
        n = self.num.get(table)
        if self.den is None:
            return n
        d = self.den.get(table)
        return n / d if d and not math.isnan(d) else math.nan

    def met(self, value: float) -> bool | None:
        if self.target is None or math.isnan(value):
            return None
        cmp: Callable[[float, float], bool] = operator.ge if self.op == ">=" else operator.le
        return cmp(value, self.target)


ECHO = "echo-uvloop"
CHECKS = [
    Check("warm 1 silo / echo, calls/s @64",
          Ref("warm", "warm-1silo", 64, "calls_per_s"),
          Ref("grpc_echo", ECHO, 64, "calls_per_s"), ">=", 0.8),
    Check("warm 1 silo / echo, p99 @16",
          Ref("warm", "warm-1silo", 16, "p99_ms"),
          Ref("grpc_echo", ECHO, 16, "p99_ms"), "<=", 1.5),
    Check("stretch: warm 1 silo (call stream) / unary echo, calls/s @64",
          Ref("warm", "warm-1silo", 64, "calls_per_s"),
          Ref("grpc_echo", ECHO, 64, "calls_per_s"), ">=", 1.5),
    Check("warm 1 silo, unary client / echo, calls/s @64",
          Ref("warm", "warm-1silo-unary", 64, "calls_per_s"),
          Ref("grpc_echo", ECHO, 64, "calls_per_s"), ">=", None),
    Check("warm 3 silos / echo, calls/s @64",
          Ref("warm", "warm-3silos", 64, "calls_per_s"),
          Ref("grpc_echo", ECHO, 64, "calls_per_s"), ">=", None),
    Check("warm 1 silo / echo, calls/s @1",
          Ref("warm", "warm-1silo", 1, "calls_per_s"),
          Ref("grpc_echo", ECHO, 1, "calls_per_s"), ">=", None),
    Check("warm 1 silo / Ray direct, calls/s @64",
          Ref("warm", "warm-1silo", 64, "calls_per_s"),
          Ref("ray", "ray-direct", 64, "calls_per_s"), ">=", 3.0),
    Check("warm 1 silo / Ray get_if_exists, calls/s @64",
          Ref("warm", "warm-1silo", 64, "calls_per_s"),
          Ref("ray", "ray-get_if_exists", 64, "calls_per_s"), ">=", 5.0),
    Check("cold / warm same keys, calls/s @64",
          Ref("cold", "cold", 64, "calls_per_s"),
          Ref("cold", "warm-same-keys", 64, "calls_per_s"), ">=", 0.5),
    Check("forwarded share, steady state",
          Ref("routing", "steady", 16, "forwarded_share"), None, "<=", 0.01),
    Check("forwarded share, first window after join",
          Ref("routing", "after-join-0", 16, "forwarded_share"), None, "<=", None),
    Check("100k grains, MiB above empty silo",
          Ref("memory", "100k-grains", None, "above_empty_mib"), None, "<=", 200.0),
    Check("10k grains, bytes per grain",
          Ref("memory", "10k-grains", None, "bytes_per_grain"), None, "<=", None),
    Check("empty silo RSS / idle Ray runtime RSS",
          Ref("memory", "empty-silo", None, "rss_mib"),
          Ref("ray", "ray-idle", None, "rss_mib"), "<=", None),
    Check("pipeline (context + one no-op filter) / plain, calls/s @64",
          Ref("pipeline", "context+filter", 64, "calls_per_s"),
          Ref("pipeline", "plain", 64, "calls_per_s"), ">=", 0.9),
    Check("pipeline, request context alone / plain, calls/s @64",
          Ref("pipeline", "context", 64, "calls_per_s"),
          Ref("pipeline", "plain", 64, "calls_per_s"), ">=", None),
    Check("pipeline, one no-op filter alone / plain, calls/s @64",
          Ref("pipeline", "filter", 64, "calls_per_s"),
          Ref("pipeline", "plain", 64, "calls_per_s"), ">=", None),
    Check("grain-to-grain (silo 1 -> silo 2) / direct client call, calls/s @64",
          Ref("pipeline", "grain-to-grain", 64, "calls_per_s"),
          Ref("pipeline", "direct-client-call", 64, "calls_per_s"), ">=", None),
    Check("tracing on, sampled out (ratio 0) / off, calls/s @64",
          Ref("tracing", "sampling-0", 64, "calls_per_s"),
          Ref("tracing", "off", 64, "calls_per_s"), ">=", 0.95),
    Check("tracing on, ratio 0, client tracing too / off, calls/s @64",
          Ref("tracing", "sampling-0-traced-client", 64, "calls_per_s"),
          Ref("tracing", "off", 64, "calls_per_s"), ">=", None),
    Check("tracing on, every call recorded (ratio 1) / off, calls/s @64",
          Ref("tracing", "sampling-1", 64, "calls_per_s"),
          Ref("tracing", "off", 64, "calls_per_s"), ">=", None),
    Check("durable no-op steps/s, one silo @64 agents",
          Ref("durable", "noop-steps", 64, "steps_per_s"), None, ">=", 2000.0),
    Check("durable step / write_state, per op (p50, 1 in flight)",
          Ref("durable", "per-op-step", 1, "per_op_us"),
          Ref("durable", "per-op-write_state", 1, "per_op_us"), "<=", 2.0),
    Check("durable 5-step workflow / 5 plain calls, p50 latency @1",
          Ref("durable", "workflow-5-steps", 1, "p50_ms"),
          Ref("durable", "plain-5-calls", 1, "p50_ms"), "<=", None),
    Check("streams 1 silo / bare Redis XADD+XREAD, events/s",
          Ref("streams", "streams-1silo", 64, "events_per_s"),
          Ref("streams", "bare-redis", 64, "events_per_s"), ">=", 0.5),
    Check("streams 3 silos / bare Redis XADD+XREAD, events/s",
          Ref("streams", "streams-3silos", 64, "events_per_s"),
          Ref("streams", "bare-redis", 64, "events_per_s"), ">=", None),
    Check("streams 1 silo, publish-to-hook p99 ms @1000 events/s",
          Ref("streams", "streams-1silo", 1000, "p99_ms"), None, "<=", 20.0),
    Check("streams 3 silos, publish-to-hook p99 ms @1000 events/s",
          Ref("streams", "streams-3silos", 1000, "p99_ms"), None, "<=", 20.0),
    Check("streams 1 silo / bare Redis, p99 @1000 events/s",
          Ref("streams", "streams-1silo", 1000, "p99_ms"),
          Ref("streams", "bare-redis", 1000, "p99_ms"), "<=", None),
    Check("failover: seconds until every grain answers",
          Ref("failover", "kill-9-one-of-3", 16, "recovery_s"), None, "<=", 5.0),
    Check("reminders: register rate, reminders/s",
          Ref("reminders", "register", 64, "reminders_per_s"), None, ">=", 5000.0),
    Check("reminders: lateness p99 at ~1,000 firings/s, ms",
          Ref("reminders", "firing", None, "lateness_p99_ms"), None, "<=", 1000.0),
    Check("reminders: idle Redis cmds/s, all reminders registered / none",
          Ref("reminders", "idle-all-reminders", None, "redis_cmds_per_s"),
          Ref("reminders", "idle-0-reminders", None, "redis_cmds_per_s"), "<=", None),
]  # fmt: skip


class Interrupted(Exception):
    """SIGTERM turned into an exception so every module's cleanup still runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def load_modules(only: set[str] | None) -> list[ModuleType]:
    mods = [importlib.import_module(m) for m in MODULES]
    if only:
        unknown = only - {m.NAME for m in mods}
        if unknown:
            raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        mods = [m for m in mods if m.NAME in only]
    return mods


def summarise(
    runs: dict[Key, list[dict[str, float]]],
) -> dict[Key, dict[str, float]]:
    """Median of every metric over the repetitions that produced it."""
    table: dict[Key, dict[str, float]] = {}
    for key, reps in runs.items():
        metrics = sorted({m for r in reps for m in r})
        table[key] = {m: median([r.get(m, math.nan) for r in reps]) for m in metrics}
    return table


def fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.1:
        return f"{v:.2f}"
    return f"{v:.4f}"


def print_tables(table: dict[Key, dict[str, float]], checks: list[dict[str, Any]]) -> None:
    benches: list[str] = []
    for b, _, _ in table:
        if b not in benches:
            benches.append(b)
    for b in benches:
        rows = [(k, v) for k, v in table.items() if k[0] == b]
        cols: list[str] = []
        for _, v in rows:
            cols.extend(c for c in v if c not in cols)
        head = ["case", "in-flight", *cols]
        body = [
            [k[1], "-" if k[2] is None else str(k[2]), *(fmt(v.get(c, math.nan)) for c in cols)]
            for k, v in rows
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        print(f"\n== {b}")
        for r in [head, *body]:
            cells = (
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            print("  ".join(cells))
    if not checks:
        return
    print("\n== targets (issue 6), from this run")
    width = max(len(c["label"]) for c in checks)
    for c in checks:
        target = "" if c["target"] is None else f"{c['op']} {fmt(c['target'])}"
        status = {True: "MET", False: "MISSED", None: ""}[c["met"]]
        print(f"{c['label'].ljust(width)}  {fmt(c['value']).rjust(10)}  {target:>9}  {status}")


def plot(
    table: dict[Key, dict[str, float]], checks: list[dict[str, Any]], prefix: str
) -> list[Path]:
    """Throughput and latency vs concurrency, targets as bars; PNGs in bench/results/."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib not installed: no plots", file=sys.stderr)
        return []
    written: list[Path] = []
    series: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for (b, case, n), m in table.items():
        if n is not None and n > 0 and "calls_per_s" in m and b in ("grpc_echo", "ray", "warm"):
            series.setdefault(case, []).append((n, m))

    if series:
        fig, ax = plt.subplots(figsize=(8, 5))
        for case, pts in series.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1]["calls_per_s"] for p in pts], marker="o", label=case)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("calls in flight")
        ax.set_ylabel("calls/s (median)")
        ax.set_title("Throughput vs concurrency")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = RESULTS_DIR / f"{prefix}throughput.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        for ax, metric in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            for case, pts in series.items():
                ax.plot([p[0] for p in pts], [p[1][metric] for p in pts], marker="o", label=case)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("calls in flight")
            ax.set_ylabel(f"{metric.split('_')[0]} latency (ms)")
            ax.grid(True, alpha=0.3)
        axes[0].legend()
        fig.suptitle("Latency vs concurrency")
        path = RESULTS_DIR / f"{prefix}latency.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    scored = [c for c in checks if c["met"] is not None]
    if scored:
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(scored) + 1.5))
        # score > 1 means the target is met, whichever direction the target points
        # clipped to [0.1, 10] so a perfect 0 (e.g. no forwards at all) stays readable
        scores = [min(10.0, max(0.1, _score(c["value"], c["target"], c["op"]))) for c in scored]
        colors = ["tab:green" if c["met"] else "tab:red" for c in scored]
        bars = ax.barh([c["label"] for c in scored], scores, color=colors)
        ax.bar_label(
            bars, labels=[f"{fmt(c['value'])} {c['op']} {fmt(c['target'])}" for c in scored]
        )
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(0.1, 60)
        ax.set_xlabel("measured / target (>1 = target met)")
        ax.invert_yaxis()
        path = RESULTS_DIR / f"{prefix}targets.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _score(value: float, target: float, op: str) -> float:
    """measured/target oriented so that > 1 always means the target is met."""
    if op == ">=":
        return value / target if target else math.inf
    return target / value if value else math.inf


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: write null instead (a figure that was not measured)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "uvloop": have_uvloop(),
    }
    for mod in ("grpc", "ray", "redis", "orjson", "uvloop"):
        with contextlib.suppress(Exception):
            env[mod] = importlib.import_module(mod).__version__
    with contextlib.suppress(Exception):
        env["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grainery benchmark suite")
    parser.add_argument("--quick", action="store_true", help="1 repeat, short windows (< 3 min)")
    parser.add_argument("--repeats", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per level")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--no-uvloop", action="store_true", help="client on plain asyncio")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each module wait up to S seconds for other processes to go quiet",
    )
    args = parser.parse_args(argv)

    cfg = RunConfig(
        quick=args.quick,
        duration=args.duration or (1.5 if args.quick else 5.0),
        warmup=0.5 if args.quick else 1.0,
        use_uvloop=not args.no_uvloop,
    )
    repeats = args.repeats or (1 if args.quick else 3)
    modules = load_modules(set(args.only.split(",")) if args.only else None)
    signal.signal(signal.SIGTERM, _on_sigterm)

    runs: dict[Key, list[dict[str, float]]] = {}
    info: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    failures: dict[str, list[str]] = {}
    contention: list[dict[str, Any]] = []
    t_start = time.monotonic()
    for mod in modules:
        reason = mod.unavailable()
        if reason:
            skipped[mod.NAME] = reason
            cfg.log(f"skip {mod.NAME}: {reason}")
    active = [m for m in modules if m.NAME not in skipped]
    try:
        for rep in range(repeats):
            for mod in active:
                if rep >= getattr(mod, "MAX_REPEATS", repeats):
                    continue
                cfg.log(f"--- {mod.NAME} (repetition {rep + 1}/{repeats})")
                if args.wait_idle > 0:
                    machine.wait_quiet(args.wait_idle, log=cfg.log)
                t0 = time.monotonic()
                try:
                    with machine.CpuMonitor() as mon:
                        results: list[Measurement] = mod.run(cfg)
                except (KeyboardInterrupt, Interrupted):
                    raise
                except Exception as exc:
                    failures.setdefault(mod.NAME, []).append(
                        f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
                    )
                    cfg.log(f"{mod.NAME} failed: {type(exc).__name__}: {str(exc)[:2000]}")
                    continue
                cfg.log(f"{mod.NAME} took {time.monotonic() - t0:.1f}s")
                contention.append({"bench": mod.NAME, "repetition": rep + 1, **mon.result})
                if mon.disturbance > BUSY_CORES:
                    cfg.log(
                        f"WARNING: other processes used {mon.result['foreign_cores']:.2f} cores "
                        f"(+{mon.result['steal_cores']:.2f} stolen) during {mod.NAME}: "
                        "figures skewed"
                    )
                for m in results:
                    key = (mod.NAME, m.case, m.in_flight)
                    runs.setdefault(key, []).append(m.metrics)
                    if m.info:
                        info.setdefault(f"{mod.NAME}/{m.case}/{m.in_flight}", []).append(m.info)
    except (KeyboardInterrupt, Interrupted) as exc:
        cfg.log(f"interrupted ({exc!r}); reporting what was measured")

    table = summarise(runs)
    checks: list[dict[str, Any]] = []
    for c in CHECKS:
        value = c.value(table)
        if math.isnan(value):
            continue
        checks.append(
            {"label": c.label, "value": value, "op": c.op, "target": c.target, "met": c.met(value)}
        )
    print_tables(table, checks)
    if skipped:
        print("\nskipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if failures:
        print("\nfailed: " + "; ".join(f"{k}: {v[0].splitlines()[0]}" for k, v in failures.items()))
    busy = [
        c for c in contention if c.get("foreign_cores", 0) + c.get("steal_cores", 0) > BUSY_CORES
    ]
    if busy:
        print(
            "\nWARNING: the machine was not quiet; other processes used CPU during: "
            + ", ".join(
                f"{c['bench']} (rep {c['repetition']}: {c['foreign_cores']:.2f} cores)"
                for c in busy
            )
        )
    wall = time.monotonic() - t_start
    cmd = " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{cmd}: {repeats} repetition(s), {wall:.0f}s")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    prefix = "quick-" if args.quick else ""
    doc = {
        "command": cmd,
        "environment": environment(),
        "config": {"repeats": repeats, "duration": cfg.duration, "warmup": cfg.warmup,
                   "levels": list(cfg.levels), "client_uvloop": cfg.use_uvloop},
        "wall_seconds": wall,
        "median": [
            {"bench": b, "case": c, "in_flight": n, **m} for (b, c, n), m in table.items()
        ],
        "runs": [
            {"bench": b, "case": c, "in_flight": n, "repeats": r} for (b, c, n), r in runs.items()
        ],
        "targets": checks,
        "info": info,
        "machine_contention": contention,
        "skipped": skipped,
        "failures": failures,
    }  # fmt: skip
    out = RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_json_safe(doc), indent=2, default=str))
    tmp.replace(out)
    written = [out, *plot(table, checks, prefix)]
    print("wrote " + ", ".join(str(p.relative_to(RESULTS_DIR.parent.parent)) for p in written))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
