"""Grains for the soak test: every call activates a grain and deactivates it again.

``GRAINERY_SOAK_LEAK`` (tasks, memory or fds) makes each call leak one of those on
purpose, to show that the soak test notices a leak (see tests/integration/test_soak.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from grainery.silo import Grain

_LEAK = os.environ.get("GRAINERY_SOAK_LEAK", "")
_leaked: list[Any] = []


def _leak() -> None:
    if _LEAK == "tasks":
        _leaked.append(asyncio.get_running_loop().create_task(asyncio.Event().wait()))
    elif _LEAK == "memory":
        _leaked.append(bytearray(256 * 1024))
    elif _LEAK == "fds":
        _leaked.append(open(os.devnull, "rb"))  # noqa: SIM115 - kept open on purpose


class Churn(Grain):
    """Writes its state, then asks to be deactivated: the next call activates it again."""

    async def touch(self, n: int) -> int:
        _leak()
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        self.deactivate_on_idle()
        return int(self.state["value"])

    async def relay(self, key: str) -> int:
        """A grain-to-grain call: it crosses silos (and their peer channels) as placement says."""
        self.deactivate_on_idle()
        result: int = await self.get_grain("Churn", key).touch(1)
        return result
