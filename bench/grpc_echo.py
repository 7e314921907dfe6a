"""Baseline: a bare ``grpc.aio`` unary echo, server in its own process, 100-byte payload.

This is the ceiling a unary Grainery call can approach on the same machine: one gRPC hop with
no work behind it. It uses a generic handler with identity (bytes in, bytes out) serialisation
so no protobuf code generation is involved, and imports only grpcio (+ uvloop if present) so
the grpcio version study can run it in throwaway venvs:

    python -m bench.grpc_echo --loops both --repeats 3 --duration 5 --json out.json
    python -m bench.grpc_echo serve --port 50051 --uvloop     # the server side alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.common import (
    REPO_ROOT,
    Measurement,
    RunConfig,
    closed_loop,
    free_port,
    have_uvloop,
    median,
    proc_cpu_seconds,
    run_async,
    wait_port,
)

NAME = "grpc_echo"
DESCRIPTION = "bare grpc.aio unary echo (separate server process), 100-byte payload"
SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
PAYLOAD = b"x" * 100


def unavailable() -> str | None:
    """grpcio is a core dependency, so this only fails in a broken environment."""
    try:
        import grpc  # noqa: F401
    except ImportError as exc:
        return f"grpcio not importable: {exc}"
    return None


# --- server -----------------------------------------------------------------------------------


async def _serve(port: int) -> None:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    # request_deserializer/response_serializer None = identity: bytes in, bytes out.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"echo serving on {port}", flush=True)
    await server.wait_for_termination()


class EchoServer:
    """The echo server as a child process (so client and server do not share a GIL)."""

    def __init__(self, use_uvloop: bool) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "bench.grpc_echo", "serve", "--port", str(self.port)]
        if use_uvloop:
            cmd.append("--uvloop")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, cwd=REPO_ROOT)
        if not wait_port(self.port, 20.0):
            self.stop()
            raise RuntimeError("echo server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- client -----------------------------------------------------------------------------------


async def _measure(
    port: int, server_pid: int, levels: tuple[int, ...], duration: float, warmup: float
) -> list[dict[str, float]]:
    import grpc

    out: list[dict[str, float]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(METHOD)  # no serializers: bytes pass through unchanged
        await channel.channel_ready()
        for _ in range(200):
            await echo(PAYLOAD)

        async def call(_: int) -> None:
            await echo(PAYLOAD)

        for n in levels:
            cpu0 = proc_cpu_seconds(server_pid)
            client_cpu0 = time.process_time()
            t0 = time.monotonic()
            res = await closed_loop(call, n, duration, warmup)
            cpu1 = proc_cpu_seconds(server_pid)
            metrics = {"in_flight": float(n), **res.metrics()}
            # CPU includes the warm-up window: scale to the calls made over the whole run.
            total_calls = res.rate * (time.monotonic() - t0)
            if total_calls > 0:
                metrics["server_cpu_us_per_call"] = (cpu1 - cpu0) / total_calls * 1e6
                client_cpu = time.process_time() - client_cpu0
                metrics["client_cpu_us_per_call"] = client_cpu / total_calls * 1e6
            out.append(metrics)
    return out


def measure(
    use_uvloop: bool, levels: tuple[int, ...], duration: float, warmup: float
) -> list[dict[str, float]]:
    """Start a server, sweep the concurrency levels from this process, stop the server."""
    with EchoServer(use_uvloop) as server:
        return run_async(
            _measure(server.port, server.proc.pid, levels, duration, warmup), use_uvloop
        )


def run(cfg: RunConfig) -> list[Measurement]:
    """One repetition for the harness: uvloop (what the silo uses) and plain asyncio."""
    loops = [True, False] if have_uvloop() else [False]
    out: list[Measurement] = []
    for uv in loops:
        case = "echo-uvloop" if uv else "echo-asyncio"
        cfg.log(f"{NAME}: {case}")
        for m in measure(uv, cfg.levels, cfg.duration, cfg.warmup):
            n = int(m.pop("in_flight"))
            out.append(Measurement(case, n, m))
    return out


# --- standalone (grpcio version study) --------------------------------------------------------


def _standalone(args: argparse.Namespace) -> None:
    import grpc

    levels = tuple(int(x) for x in args.levels.split(","))
    loop_modes = {"both": [True, False], "on": [True], "off": [False]}[args.loops]
    if not have_uvloop():
        loop_modes = [False]
    runs: dict[str, list[list[dict[str, float]]]] = {}
    for rep in range(args.repeats):
        for uv in loop_modes:
            key = "uvloop" if uv else "asyncio"
            print(f"grpcio {grpc.__version__} {key} rep {rep + 1}", file=sys.stderr, flush=True)
            runs.setdefault(key, []).append(measure(uv, levels, args.duration, args.warmup))
    summary: dict[str, list[dict[str, float]]] = {}
    for key, reps in runs.items():
        rows = []
        for i, n in enumerate(levels):
            row: dict[str, float] = {"in_flight": float(n)}
            for metric in reps[0][i]:
                if metric != "in_flight":
                    row[metric] = median([r[i].get(metric, float("nan")) for r in reps])
            rows.append(row)
        summary[key] = rows
    result = {
        "grpcio": grpc.__version__,
        "python": sys.version.split()[0],
        "repeats": args.repeats,
        "duration": args.duration,
        "median": summary,
        "runs": runs,
    }
    for key, rows in summary.items():
        for row in rows:
            print(
                f"grpcio {grpc.__version__:8} {key:8} in_flight={int(row['in_flight']):4} "
                f"{row['calls_per_s']:9.0f} calls/s  p50 {row['p50_ms']:6.2f} ms  "
                f"p99 {row['p99_ms']:6.2f} ms  cpu/call "
                f"{row.get('server_cpu_us_per_call', float('nan')):5.0f} us"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    serve = sub.add_parser("serve", help="run only the echo server")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--uvloop", action="store_true")
    parser.add_argument("--loops", choices=["both", "on", "off"], default="both")
    parser.add_argument("--levels", default="1,16,64,256")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write raw and median figures here")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        if args.uvloop:
            run_async(_serve(args.port), True)
        else:
            asyncio.run(_serve(args.port))
        return
    _standalone(args)


if __name__ == "__main__":
    main()
