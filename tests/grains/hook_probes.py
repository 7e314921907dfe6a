"""A grain with a runtime hook, for tests/integration/test_system_calls.py."""

from __future__ import annotations

from typing import Any

from grainery import Grain


class HookProbe(Grain):
    async def receive_reminder(self, name: str, tick: dict[str, Any]) -> str:
        self.state["hooked"] = self.state.get("hooked", 0) + 1
        await self.write_state()
        return name

    async def hooked(self) -> int:
        return int(self.state.get("hooked", 0))
