"""What the dashboard costs a silo: per call, per sample, per report.

    .venv/bin/python -m bench.dashboard_cost

- per call: ``GrainActivity.record`` (the only dashboard code on the call path), against a
  warm in-process call through the real dispatcher (no gRPC: the smallest call there is, so
  the share printed is an upper bound of what a real call pays);
- per second: one ``MetricsSampler.sample`` with 50 grain types x 4 methods of metrics;
- per report: the top-grains walk over 10,000 activations (done at most once a second).
Figures on the machine it runs on; no assertion.
"""

from __future__ import annotations

import asyncio
import time
import timeit

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.routing import GrainId
from grainery.silo.dashboard.activity import GrainActivity, top
from grainery.silo.dashboard.sampler import MetricsSampler
from grainery.silo.grain import Grain
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry
from tests.inprocess import InProcessCluster


class CostCounter(Grain):
    async def add(self, n: int) -> int:
        self.state["n"] = self.state.get("n", 0) + n
        return int(self.state["n"])


def record_ns() -> float:
    activity = GrainActivity()
    record = activity.record
    now = time.perf_counter()
    runs = 1_000_000
    seconds = min(timeit.repeat(lambda: record(now, 0.001), number=runs, repeat=5))
    return seconds / runs * 1e9


async def warm_call_us() -> float:
    registry = GrainRegistry()
    registry.register(CostCounter)
    cluster = InProcessCluster(registry)
    silo = cluster.add("s1")
    request = pb.InvokeRequest(grain_type="CostCounter", grain_key="k", method="add",
                               args_json="[1]")
    await silo.dispatcher.invoke(request, 5.0)
    best = float("inf")
    for _ in range(5):
        runs = 20_000
        started = time.perf_counter()
        for _ in range(runs):
            await silo.dispatcher.invoke(request, 5.0)
        best = min(best, (time.perf_counter() - started) / runs)
    cluster.close()
    return best * 1e6


def sample_ms() -> float:
    metrics = SiloMetrics()
    for t in range(50):
        for m in range(4):
            metrics.calls.labels(f"T{t}", f"m{m}", "ok").inc()
            metrics.call_duration.labels(f"T{t}", f"m{m}").observe(0.002)
    sampler = MetricsSampler(metrics, lambda: 0, lambda: 0)
    return min(timeit.repeat(sampler.sample, number=20, repeat=5)) / 20 * 1e3


def walk_ms(activations: int = 10_000) -> float:
    now = time.perf_counter()
    rows = []
    for i in range(activations):
        activity = GrainActivity()
        for _ in range(i % 7):
            activity.record(now, 0.001 * (i % 13))
        rows.append((GrainId("T", str(i)), activity))
    return min(timeit.repeat(lambda: top(rows, now, 50), number=5, repeat=3)) / 5 * 1e3


def main() -> None:
    per_record = record_ns()
    per_call = asyncio.run(warm_call_us())
    print(f"record() per call:         {per_record:8.0f} ns")
    print(f"warm in-process call:      {per_call:8.1f} us  "
          f"(record = {per_record / (per_call * 1000) * 100:.2f}% of it)")
    print(f"one metrics sample:        {sample_ms():8.2f} ms  (once a second)")
    print(f"top-grains walk, 10k acts: {walk_ms():8.2f} ms  (at most once a second, on demand)")


if __name__ == "__main__":
    main()
