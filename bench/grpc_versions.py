"""grpcio version study: the bare echo (``bench.grpc_echo``) under several grpcio releases.

Why: per-RPC overhead inside gRPC Python is the ceiling of a unary design, and it changes
between releases, so the project pins the fastest release without known advisories. Each
version gets a throwaway venv (``/tmp/grpcvenv-X``: grpcio==X + uvloop only); repetitions are
interleaved across versions so slow drift of the machine does not favour one of them.

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
    args = parser.parse_args(argv)
    versions = args.versions.split(",")
    pythons = {v: ensure_venv(v, Path(args.venv_base)) for v in versions}
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    # raw[version][loop] = list of per-repeat rows
    raw: dict[str, dict[str, list[list[dict[str, float]]]]] = {v: {} for v in versions}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for v in versions:
                out = Path(tmp) / f"{v}-{rep}.json"
                cmd = [
                    str(pythons[v]), "-m", "bench.grpc_echo", "--loops", "both",
                    "--repeats", "1", "--duration", str(args.duration),
                    "--levels", args.levels, "--json", str(out),
                ]  # fmt: skip
                print(f"rep {rep + 1}/{args.repeats} grpcio {v}", file=sys.stderr, flush=True)
                subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
                data = json.loads(out.read_text())
                for loop, reps in data["runs"].items():
                    raw[v].setdefault(loop, []).extend(reps)
    table: list[dict[str, float | str]] = []
    for v in versions:
        for loop, reps in raw[v].items():
            for i, n in enumerate(int(x) for x in args.levels.split(",")):
                row: dict[str, float | str] = {"grpcio": v, "loop": loop, "in_flight": n}
                for metric in ("calls_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_call"):
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
    Path(args.out).write_text(json.dumps({"median": table, "raw": raw}, indent=2))


if __name__ == "__main__":
    main()
