"""Grains that give the dashboard's tests something to show: a counter that keeps state (so
a lookup sees a state size), and calls that fail (so the error rate moves)."""

from __future__ import annotations

from typing import Any

from grainery import ReminderTick, durable, implicit_subscription, stateless_worker
from grainery.silo import Grain


class Meter(Grain):
    async def hit(self, n: int) -> int:
        self.state["hits"] = self.state.get("hits", 0) + n
        await self.write_state()
        return int(self.state["hits"])

    async def where(self) -> str:
        return self.silo_id

    async def fail(self) -> None:
        raise RuntimeError("a failure the dashboard counts")

    async def remind(self) -> None:
        """A reminder every second, so the reminder charts and the lookup have one."""
        await self.register_reminder("beat", 0, 1)

    async def receive_reminder(self, name: str, tick: ReminderTick) -> None:
        self.state["beats"] = self.state.get("beats", 0) + 1
        await self.write_state()


@stateless_worker(max_local=2)
class Helper(Grain):
    """A stateless worker: no directory entry, so a lookup says it runs anywhere."""

    async def help(self) -> str:
        return self.silo_id


class Planner(Grain):
    """A durable agent: its steps are journaled, so a lookup shows its journal."""

    @durable
    async def plan(self, steps: int) -> list[int]:
        return [await self.step(f"s{i}", self._double, i) for i in range(steps)]

    async def _double(self, i: int) -> int:
        return i * 2


@implicit_subscription("beats")
class Listener(Grain):
    """Gets every event of the "beats" streams of its key: the stream charts move."""

    async def on_stream_event(self, namespace: str, key: str, event: Any, token: str) -> None:
        self.state["seen"] = self.state.get("seen", 0) + 1
        await self.write_state()
