"""Grains for the timer tests through real silos (tests/integration/test_timers.py).

Each tick INCRs ``timer-probe:{key}:ticks`` in the store, outside the grain's fenced state,
so a tick that ran when it should not have (after deactivation) is recorded even though a
state write from it would be refused; ``on_deactivate`` SETs ``timer-probe:{key}:stopped``
to the count it left at and ``...:reason`` to why. The store's URL comes from
``GRAINERY_TEST_STORE_URL`` (set by the test for the silos it starts).
"""

from __future__ import annotations

from grainery import Grain
from tests.grains.probe_store import store


def record(key: str, what: str) -> str:
    return f"timer-probe:{key}:{what}"


class TimerProbe(Grain):
    async def start(self, period: float, keep_alive: bool = False) -> None:
        self.register_timer(self._tick, due=0, period=period, keep_alive=keep_alive)

    async def _tick(self) -> None:
        await store().incr(record(self.key, "ticks"))

    async def leave(self) -> None:
        self.deactivate_on_idle()

    async def on_deactivate(self, reason: str) -> None:
        ticks = await store().get(record(self.key, "ticks"))
        await store().set(record(self.key, "stopped"), int(ticks or 0))
        await store().set(record(self.key, "reason"), reason)


class IdleTimerProbe(TimerProbe):
    """Collected after 1 s without calls, whatever its timer does (unless keep_alive)."""

    idle_timeout = 1.0
