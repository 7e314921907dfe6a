"""Grains the benchmark silos host (``grainery silo --grains bench.grains``).

Why these: ``add`` mirrors the Ray baseline (small dict state, no I/O) so warm-call figures
compare the call path alone; ``fill``/``size`` give cold calls ~1 KB of state to load; ``touch``
is the smallest possible resident grain for the memory benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from grainery import implicit_subscription
from grainery.silo import Grain


class BenchCounter(Grain):
    """A counter kept in memory (no write per call) plus durable helpers."""

    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        return int(self.state["value"])

    async def add_durable(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def fill(self, blob: str) -> int:
        self.state["blob"] = blob
        await self.write_state()
        return len(blob)

    async def size(self) -> int:
        return len(self.state.get("blob", ""))

    async def touch(self) -> bool:
        return True


class BenchRelay(Grain):
    """Calls another grain: grain-to-grain throughput (A on one silo calls B on another)."""

    async def relay(self, key: str) -> int:
        result: int = await self.get_grain("BenchCounter", key).add(1)
        return result


async def no_op_filter(call: object, proceed: Callable[[], Awaitable[object]]) -> object:
    """A silo-wide incoming filter that does nothing but pass the call on: the cost of the
    call pipeline when a filter is installed (``--filter bench.grains:no_op_filter``)."""
    return await proceed()


# ----- streams (bench/streams.py) -----
@implicit_subscription("bench-stream")
class BenchStreamSink(Grain):
    """Receives every event of the stream ("bench-stream", its key) and keeps, in memory, how
    long each took from the publisher's clock (``event["t"]``, same machine) to this hook."""

    async def on_activate(self) -> None:
        self._latencies: list[float] = []
        self._count = 0

    async def on_stream_event(self, namespace: str, key: str, event: Any, token: str) -> None:
        self._latencies.append(time.time() - float(event["t"]))
        self._count += 1

    async def received(self) -> int:
        return self._count

    async def take_latencies(self) -> list[float]:
        taken, self._latencies = self._latencies, []
        return taken
