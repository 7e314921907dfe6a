"""The smallest useful grain: a durable counter."""

from __future__ import annotations

from silo import Grain


class Counter(Grain):
    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def get(self) -> int:
        return int(self.state.get("value", 0))

    async def reset(self) -> None:
        await self.clear_state()
