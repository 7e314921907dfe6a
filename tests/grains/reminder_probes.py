"""Grains for the reminder tests through real silos (tests/integration/test_reminders*.py).

Activations and deactivations are counted in the same hash (``{key}#activations``, ...).
Every tick is recorded twice: in the grain's state (the tick's scheduled time, per reminder
name) and, outside the grain's fenced state, as ``HINCRBY reminder-probe:{ns} {key}/{name}@
{scheduled ms} 1`` in the store, where ``ns`` is the part of the key before the first ``:``.
A tick delivered twice shows as a count of 2 even if its second state write was refused.
The store's URL comes from ``GRAINERY_TEST_STORE_URL`` (set by the tests for their silos).
"""

from __future__ import annotations

from typing import Any

from grainery import Grain, ReminderTick
from grainery.silo.reminders.runtime import RUNTIME_REMINDERS
from tests.grains.probe_store import store


def record_key(namespace: str) -> str:
    return f"reminder-probe:{namespace}"


def namespace_of(key: str) -> str:
    return key.split(":", 1)[0]


async def runtime_probe(grain: Grain, name: str, tick: ReminderTick) -> None:
    """The handler of "$probe..." runtime reminders (as durable agents register theirs)."""
    scheduled_ms = round(tick.scheduled * 1000)
    await store().hincrby(record_key(namespace_of(grain.key)),
                          f"{grain.key}/{name}@{scheduled_ms}", 1)


RUNTIME_REMINDERS["$probe"] = runtime_probe


class ReminderProbe(Grain):
    async def on_activate(self) -> None:
        await store().hincrby(record_key(namespace_of(self.key)), f"{self.key}#activations", 1)

    async def on_deactivate(self, reason: str) -> None:
        await store().hincrby(record_key(namespace_of(self.key)), f"{self.key}#deactivations", 1)

    async def receive_reminder(self, name: str, tick: ReminderTick) -> None:
        assert isinstance(tick, ReminderTick) and not name.startswith("$")
        scheduled_ms = round(tick.scheduled * 1000)
        await store().hincrby(record_key(namespace_of(self.key)),
                              f"{self.key}/{name}@{scheduled_ms}", 1)
        ticks: dict[str, list[int]] = self.state.setdefault("ticks", {})
        ticks.setdefault(name, []).append(scheduled_ms)
        self.state["served_by"] = self.silo_id
        self.state["period_seen"] = tick.period
        if name.startswith("once"):  # unregisters itself from inside its own tick
            await self.unregister_reminder(name)
        elif name.startswith("switch") and tick.period < 2:  # re-registers with a new period
            await self.register_reminder(name, due=1, period=2)
        elif name.startswith("boom"):
            raise RuntimeError("the hook failed on purpose")
        await self.write_state()

    async def remind(self, name: str, due: float, period: float) -> None:
        await self.register_reminder(name, due=due, period=period)

    async def remind_runtime(self, name: str, due: float, period: float) -> None:
        await self._register_runtime_reminder(name, due=due, period=period)

    async def forget(self, name: str) -> bool:
        return await self.unregister_reminder(name)

    async def reminders(self, include_runtime: bool = False) -> list[dict[str, Any]]:
        return [r.to_json() for r in await self.list_reminders(include_runtime)]

    async def ticks(self, name: str) -> list[int]:
        return list(self.state.get("ticks", {}).get(name, []))

    async def info(self) -> dict[str, Any]:
        return {"served_by": self.state.get("served_by"),
                "period_seen": self.state.get("period_seen")}

    async def leave(self) -> None:
        self.deactivate_on_idle()


class NoHook(Grain):
    """A grain with a reminder and no receive_reminder: its ticks are undeliverable."""

    async def remind(self, name: str, due: float, period: float) -> None:
        await self.register_reminder(name, due=due, period=period)

    async def reminders(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in await self.list_reminders()]
