"""Grains for the timer tests through real silos (tests/integration/test_timers.py).

Each tick adds one to ``state["ticks"]`` and writes it, so the store holds what ran;
``on_deactivate`` writes the count it stopped at and why, so a test can prove no tick ran
after the grain left (a later activation reports the stored state and starts no timer).
"""

from __future__ import annotations

from typing import Any

from grainery import Grain


class TimerProbe(Grain):
    async def start(self, period: float, keep_alive: bool = False) -> None:
        self.register_timer(self._tick, due=0, period=period, keep_alive=keep_alive)

    async def _tick(self) -> None:
        self.state["ticks"] = self.state.get("ticks", 0) + 1
        await self.write_state()

    async def leave(self) -> None:
        self.deactivate_on_idle()

    async def report(self) -> dict[str, Any]:
        return dict(self.state)

    async def on_deactivate(self, reason: str) -> None:
        self.state["stopped_at"] = self.state.get("ticks", 0)
        self.state["reason"] = reason
        await self.write_state()


class IdleTimerProbe(TimerProbe):
    """Collected after 1 s without calls, whatever its timer does (unless keep_alive)."""

    idle_timeout = 1.0
