"""grpcio version study: the bare echo (``bench.grpc_echo``) under several grpcio releases.

Why: per-RPC overhead inside gRPC Python is the ceiling of a unary design, and it changes
between releases, so the project pins the fastest release without known advisories. Each
version gets a throwaway venv (``/tmp/grpcvenv-X``: grpcio==X + uvloop only); repetitions are
interleaved across versions so slow drift of the machine does not favour one of them, and a
run that other processes disturbed (see ``bench.machine``) is repeated.

    python -m bench.grpc_versions --versions 1.62.3,1.70.0,1.78.0,1.85.1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import machine
from bench.common import REPO_ROOT, RESULTS_DIR, median

DEFAULT_VERSIONS = "1.62.3,1.70.0,1.78.0,1.85.1"


def ensure_venv(version: str, base: Path) -> Path:
    """Create /tmp/grpcvenv-X with exactly grpcio==X and uvloop, once."""
    venv = base / f"grpcvenv-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import grpc, uvloop; print(grpc.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != version:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"grpcio=={version}", "uvloop"],
            check=True,
        )
    return python


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default=DEFAULT_VERSIONS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--levels", default="1,16,64,256")
    parser.add_argument("--venv-base", default="/tmp")
    parser.add_argument("--out", default=str(RESULTS_DIR / "grpc_versions.json"))
    parser.add_argument(
        "--retries", type=int, default=2, help="re-run a measurement the machine disturbed"
    )
    args = parser.parse_args(argv)
    versions = args.versions.split(",")
    pythons = {v: ensure_venv(v, Path(args.venv_base)) for v in versions}
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    # raw[version][loop] = list of per-repeat rows
    raw: dict[str, dict[str, list[list[dict[str, float]]]]] = {v: {} for v in versions}
    contention: list[dict[str, float | str | int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for v in versions:
                out = Path(tmp) / f"{v}-{rep}.json"
                cmd = [
                    str(pythons[v]), "-m", "bench.grpc_echo", "--loops", "both",
                    "--repeats", "1", "--duration", str(args.duration),
                    "--levels", args.levels, "--json", str(out),
                ]  # fmt: skip
                for attempt in range(args.retries + 1):
                    machine.wait_quiet(60.0, log=lambda m: print(m, file=sys.stderr))
                    print(f"rep {rep + 1}/{args.repeats} grpcio {v}", file=sys.stderr, flush=True)
                    with machine.CpuMonitor() as mon:
                        subprocess.run(
                            cmd, env=env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL
                        )
                    disturbed = mon.disturbance
                    contention.append(
                        {"grpcio": v, "rep": rep + 1, "attempt": attempt, **mon.result}
                    )
                    if disturbed <= 0.2:
                        break
                    print(f"  disturbed ({disturbed:.2f} cores used elsewhere)", file=sys.stderr)
                data = json.loads(out.read_text())
                for loop, reps in data["runs"].items():
                    raw[v].setdefault(loop, []).extend(reps)
    table: list[dict[str, float | str]] = []
    for v in versions:
        for loop, reps in raw[v].items():
            for i, n in enumerate(int(x) for x in args.levels.split(",")):
                row: dict[str, float | str] = {"grpcio": v, "loop": loop, "in_flight": n}
                for metric in ("calls_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_call"):
                    # median over repetitions, per concurrency level
                    row[metric] = median([r[i].get(metric, float("nan")) for r in reps])
                table.append(row)
    print(f"{'grpcio':8} {'loop':8} {'inflight':>8} {'calls/s':>9} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'srv us/call':>11}")  # fmt: skip
    for r in table:
        print(
            f"{r['grpcio']:8} {r['loop']:8} {r['in_flight']:>8} {r['calls_per_s']:>9.0f} "
            f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['server_cpu_us_per_call']:>11.0f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cmd_line = " ".join(
        ["python -m bench.grpc_versions", *(argv if argv is not None else sys.argv[1:])]
    )
    doc = {"command": cmd_line, "median": table, "raw": raw, "contention": contention}
    Path(args.out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
