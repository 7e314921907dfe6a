"""Grains for the call-path tests: nested deadlines, call cycles, inner errors, keywords."""

from __future__ import annotations

import asyncio
from typing import Any

from grainery.silo import Grain
from grainery.silo.call import current_call


class Probe(Grain):
    """Reports what a call sees; relays calls to other grains."""

    async def where(self) -> str:
        return self.silo_id

    def not_async(self) -> str:  # the silo warns at start-up: not callable
        return "never"

    async def remaining(self) -> float:
        """Seconds the running call has left, as this grain's turn sees it."""
        call = current_call()
        assert call is not None, "a turn always runs with its call"
        return call.remaining(asyncio.get_running_loop())

    async def remaining_via(self, key: str, timeout: float | None = None) -> float:
        """What Probe/key sees when this grain calls it (optionally with its own timeout)."""
        return float(await self.get_grain("Probe", key).remaining(timeout=timeout))

    async def relay(self, grain_type: str, key: str, method: str, *args: Any,
                    **kwargs: Any) -> Any:
        """Call any grain method and let whatever it raises escape."""
        return await self.get_grain(grain_type, key).call(method, *args, **kwargs)

    async def catch_inner_deadline(self, key: str) -> str:
        """An inner error keeps its class inside the calling grain."""
        from grainery.client.errors import DeadlineExceededError

        try:
            await self.get_grain("Cycle", key).sleep(5.0, timeout=0.2)
        except DeadlineExceededError as error:
            return f"caught {type(error).__name__} from {error.origin}"
        return "no error"


class Cycle(Grain):
    """A calls B calls A: without reentrancy, the cycle waits until the deadline."""

    async def start(self, other: str) -> str:
        return str(await self.get_grain("Cycle", other).bounce(self.key))

    async def bounce(self, origin: str) -> str:
        return str(await self.get_grain("Cycle", origin).hello())

    async def hello(self) -> str:
        return "hello"

    async def where(self) -> str:
        return self.silo_id

    async def scale(self, x: int, *, by: int = 1) -> int:
        return x * by

    async def needs_unit(self, x: int, *, unit: str) -> str:
        return f"{x}{unit}"

    async def explode(self, message: str) -> None:
        raise ValueError(message)

    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def echo(self, *args: Any) -> list[Any]:
        return list(args)


class Activator(Grain):
    """Records the time its on_activate's own grain-to-grain call was given."""

    async def on_activate(self) -> None:
        self.seen = float(await self.get_grain("Probe", f"{self.key}-probe").remaining())

    async def seen_in_activation(self) -> float:
        return self.seen
