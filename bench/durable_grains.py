"""Grains of the durable-execution benchmark (bench/durable.py), loaded beside bench.grains."""

from __future__ import annotations

from grainery import Grain, durable


async def _noop() -> None:
    return None


class BenchAgent(Grain):
    @durable
    async def steps(self, count: int) -> int:
        """``count`` recorded no-op steps: the cost of recording alone."""
        for _ in range(count):
            await self.step("noop", _noop)
        return count

    async def writes(self, count: int) -> int:
        """``count`` state writes in one call: the baseline a step is compared with."""
        for i in range(count):
            self.state["i"] = i
            await self.write_state()
        return count

    @durable
    async def workflow5(self, counter: str) -> int:
        """Five steps, each a call to another grain."""
        total = 0
        for i in range(5):
            total = await self.step(f"add {i}", self.get_grain("BenchCounter", counter).add, 1)
        return int(total)

    async def plain5(self, counter: str) -> int:
        """The same five calls, not durable."""
        total = 0
        for _ in range(5):
            total = await self.get_grain("BenchCounter", counter).add(1)
        return int(total)
