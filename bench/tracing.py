"""What tracing costs a warm call (issue 14): off, on but sampled out, and on for every call.

Why: tracing is meant to be left configured in production with a small ratio, so a silo
with ``--otlp-endpoint`` whose calls are not sampled must cost (almost) what a silo
without it costs, and one with tracing off must pay nothing at all. Same run, same
machine, one silo per case, all started before measuring; warm ``add(1)`` calls at 64 in
flight, in rounds that alternate the cases (so drift on a shared machine hits them all):

- ``off``: no ``--otlp-endpoint`` (the reference);
- ``sampling-0``: ``--otlp-endpoint`` with ``--trace-sampling 0``, an untraced client;
- ``sampling-0-traced-client``: the same silo, the client tracing with a ratio-0 sampler
  (every call carries a sampled-out ``traceparent`` the silo follows);
- ``sampling-1``: ``--trace-sampling 1``: every call recorded and exported.

Spans go over OTLP/gRPC to ``bench.otlp_sink``, a separate process that discards them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import Cluster, core_unavailable
from bench.common import (
    REPO_ROOT,
    Measurement,
    RunConfig,
    closed_loop,
    free_port,
    median,
    run_async,
    sweep,
)

NAME = "tracing"
DESCRIPTION = "tracing cost on warm calls: off, sampled out (ratio 0), every call (ratio 1)"
KEYS = [f"trace-{i}" for i in range(1024)]
IN_FLIGHT = 64
SILOS = {  # case -> the silo's tracing flags (None: same silo as the case named)
    "off": [],
    "sampling-0": ["--trace-sampling", "0"],
    "sampling-1": ["--trace-sampling", "1"],
}
CASES = ["off", "sampling-0", "sampling-0-traced-client", "sampling-1"]


def unavailable() -> str | None:
    reason = core_unavailable()
    if reason:
        return reason
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return "tracing needs the grainery[tracing] extra (pip install -e '.[dev]')"
    return None


class Sink:
    """``bench.otlp_sink`` in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.counts = Path(tempfile.mkdtemp(prefix="grainery-sink-")) / "counts"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench.otlp_sink", str(self.port), str(self.counts)],
            stdout=subprocess.PIPE, env=env,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"listening":
            self.proc.kill()
            raise RuntimeError("the OTLP sink did not start")

    def stop(self) -> tuple[int, int]:
        """Stop it; (export requests, bytes) it received."""
        self.proc.terminate()
        self.proc.wait(10)
        requests, size = self.counts.read_text().split()
        return int(requests), int(size)


def _client_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))


async def _measure(cfg: RunConfig, clusters: dict[str, Cluster], rounds: int
                   ) -> list[Measurement]:
    from grainery import GrainClient

    def silo_of(case: str) -> Cluster:
        return clusters["sampling-0" if case == "sampling-0-traced-client" else case]

    clients = {
        case: GrainClient(*silo_of(case).addresses, tracer_provider=(
            _client_provider() if case == "sampling-0-traced-client" else None))
        for case in CASES
    }
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    errors: dict[str, list[str]] = {case: [] for case in CASES}
    try:
        for client in clients.values():
            await client.connect()
        for case, client in clients.items():
            prep = await sweep(lambda i, c=client: c.get_grain("BenchCounter", KEYS[i]).add(0),
                               len(KEYS), 64)
            if prep.errors:
                raise RuntimeError(f"activating ({case}): {prep.error_samples}")
        for n in range(rounds):
            for case in CASES:
                client = clients[case]

                async def call(i: int, c: Any = client) -> None:
                    await c.get_grain("BenchCounter", KEYS[i % len(KEYS)]).add(1)

                cfg.log(f"{NAME}: {case}, round {n + 1}/{rounds}, {IN_FLIGHT} in flight")
                res = await closed_loop(call, IN_FLIGHT, cfg.duration, cfg.warmup)
                runs[case].append(res.metrics())
                errors[case].extend(res.error_samples)
    finally:
        for client in clients.values():
            await client.close()
    out = []
    for case in CASES:
        metrics = {m: median([r[m] for r in runs[case]]) for m in runs[case][0]}
        out.append(Measurement(case, IN_FLIGHT, metrics, {"errors": errors[case][:5]}))
    return out


def run(cfg: RunConfig) -> list[Measurement]:
    stamp = time.time_ns()
    sink = Sink()
    clusters: dict[str, Cluster] = {}
    exported: tuple[int, int] = (0, 0)
    try:
        for case, flags in SILOS.items():
            extra = ["--otlp-endpoint", sink.endpoint, *flags] if case != "off" else []
            cluster = Cluster(1, f"bench-trace-{case}-{stamp}", extra=extra)
            clusters[case] = cluster.__enter__()
        rounds = 2 if cfg.quick else 3
        out = run_async(_measure(cfg, clusters, rounds), cfg.use_uvloop)
    finally:
        for cluster in clusters.values():
            cluster.stop()  # SIGTERM: the silos flush their last spans
        exported = sink.stop()
    cfg.log(f"{NAME}: the sink received {exported[0]} export requests, {exported[1]:,} bytes")
    for m in out:
        if m.case == "sampling-1":
            m.metrics["exported_mib"] = exported[1] / 2**20
    return out
