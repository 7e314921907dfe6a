"""Grains for the stateless worker tests (tests/integration/test_stateless_workers.py).

``ToolRunner`` records in the store, per run and per silo, how many of its calls run at once
(INCR before a slow await, DECR after; every value INCR returned is kept, so the test sees
the maximum) and how many each silo served. The store's URL comes from
``GRAINERY_TEST_STORE_URL`` (set by the test for the silos it starts).
"""

from __future__ import annotations

import asyncio
from typing import Any

from grainery import Grain, stateless_worker
from tests.grains.probe_store import store

MAX_LOCAL = 4


def run_key(run: str, silo_id: str, what: str) -> str:
    return f"workers-test:{run}:{silo_id}:{what}"


@stateless_worker(max_local=MAX_LOCAL)
class ToolRunner(Grain):
    async def run(self, run: str, seconds: float) -> str:
        """A slow tool call; records the concurrency this silo had while it ran."""
        db = store()
        now = await db.incr(run_key(run, self.silo_id, "now"))
        await db.rpush(run_key(run, self.silo_id, "seen"), now)
        await db.incr(run_key(run, self.silo_id, "served"))
        try:
            await asyncio.sleep(seconds)
        finally:
            await db.decr(run_key(run, self.silo_id, "now"))
        return self.silo_id

    async def where(self) -> str:
        return self.silo_id

    async def on_deactivate(self, reason: str) -> None:
        await store().rpush(f"workers-test:deactivated:{self.key}", f"{self.silo_id} {reason}")

    async def use_state(self) -> Any:
        self.state["n"] = 1
        return self.state

    async def save(self) -> None:
        await self.write_state()


@stateless_worker(max_local=2)
class QuickTool(Grain):
    """Collected soon after its last call."""

    idle_timeout = 0.5

    async def where(self) -> str:
        return self.silo_id


class Planner(Grain):
    """An ordinary grain that calls a worker: the worker runs on the planner's silo."""

    async def use_tool(self, key: str) -> dict[str, str]:
        worker = await self.get_grain("ToolRunner", key).where()
        return {"planner": self.silo_id, "worker": str(worker)}
