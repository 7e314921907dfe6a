"""What grain code and the Management RPCs call to define reminders: validation, then the store.

One per silo (``Silo.reminders_api``), handed to each activation through its context
(``ActivationContext.reminders``), so ``Grain.register_reminder`` stays a thin call.
"""

from __future__ import annotations

from grainery.silo.metrics import SiloMetrics
from grainery.silo.reminders.model import (
    RUNTIME_PREFIX,
    ReminderInfo,
    check_name,
    check_schedule,
)
from grainery.silo.reminders.store import ReminderStore


class Reminders:
    def __init__(self, store: ReminderStore, metrics: SiloMetrics) -> None:
        self.store = store
        self._metrics = metrics

    async def register(
        self, grain_type: str, key: str, name: str, due: float, period: float,
        runtime: bool = False,
    ) -> float:
        """Create or replace the reminder ``name`` of ``grain_type/key``: first tick ``due``
        seconds from now, then every ``period`` seconds. Returns the first due time (Unix
        seconds, store clock). Raises ValueError on bad input or beyond the per-grain limit
        (ReminderLimitError). ``runtime=True`` only for ``$`` names (not counted in the limit)."""
        check_name(name, runtime)
        due_ms, period_ms = check_schedule(due, period)
        first = await self.store.register(grain_type, key, name, due_ms, period_ms)
        self._metrics.reminders_registered.labels("runtime" if runtime else "user").inc()
        return first / 1000

    async def unregister(
        self, grain_type: str, key: str, name: str, runtime: bool = False
    ) -> bool:
        """Remove it; False when there was none. A tick being delivered finishes, and the
        reminder does not come back."""
        check_name(name, runtime)
        removed = await self.store.unregister(grain_type, key, name)
        if removed:
            self._metrics.reminders_unregistered.inc()
        return removed

    async def listing(
        self, grain_type: str, key: str, include_runtime: bool = False
    ) -> list[ReminderInfo]:
        found = await self.store.of_grain(grain_type, key)
        if include_runtime:
            return found
        return [r for r in found if not r.name.startswith(RUNTIME_PREFIX)]
