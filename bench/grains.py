"""Grains the benchmark silos host (``grainery silo --grains bench.grains``).

Why these: ``add`` mirrors the Ray baseline (small dict state, no I/O) so warm-call figures
compare the call path alone; ``fill``/``size`` give cold calls ~1 KB of state to load; ``touch``
is the smallest possible resident grain for the memory benchmark.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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
