"""Grains for the call-context and deadlock tests (issue 10, items 1 and 3).

``go(path)`` walks a path of grains: each grain reports what its turn sees (request
context, call chain, seconds left, silo) and calls the next ``"Type/key"`` of the path,
so a test builds any chain or cycle from the outside.
"""

from __future__ import annotations

from typing import Any

from grainery import interleave, one_way, request_context
from grainery.silo import Grain


def _observe(grain: Grain) -> dict[str, Any]:
    context = grain.call_context
    return {
        "at": f"{grain.grain_type}/{grain.key}",
        "silo": grain.silo_id,
        "values": dict(context.values),
        "chain": list(context.chain),
        "deadline": context.deadline,
    }


async def _next(grain: Grain, path: list[str], method: str) -> list[dict[str, Any]]:
    seen = [_observe(grain)]
    if path:
        grain_type, _, key = path[0].partition("/")
        seen += await grain.get_grain(grain_type, key).call(method, path[1:])
    return seen


class Hop(Grain):
    """Not reentrant: a call back into a Hop already in the chain is a deadlock."""

    async def go(self, path: list[str]) -> list[dict[str, Any]]:
        return await _next(self, path, "go")

    async def go_with(self, values: dict[str, str], path: list[str]) -> list[dict[str, Any]]:
        """Set request context inside the grain, then walk on: the values are merged."""
        with request_context(values):
            return await _next(self, path, "go")

    @interleave
    async def peek(self, path: list[str]) -> list[dict[str, Any]]:
        return await _next(self, path, "go")

    async def where(self) -> str:
        return self.silo_id

    async def context(self) -> dict[str, Any]:
        """What the call sees (the Node.js test echoes its metadata through this)."""
        return _observe(self)

    async def context_with(self, padding: str) -> dict[str, Any]:
        """As ``context``; a large ``padding`` makes silos send the call unary, not streamed."""
        return _observe(self)

    async def relay_big(self, target: str, padding: str) -> dict[str, Any]:
        """Call ``target``'s ``context_with(padding)``: a large padding goes unary."""
        grain_type, _, key = target.partition("/")
        seen: dict[str, Any] = await self.get_grain(grain_type, key).context_with(padding)
        return seen


class Notifier(Grain):
    """A one-way call back into the caller's own chain: nobody waits, so no deadlock."""

    async def notify_self(self) -> str:
        await self.get_grain("Notifier", self.key).note("from myself")
        return "sent"

    @one_way
    async def note(self, text: str) -> None:
        self.state.setdefault("notes", []).append(text)
        await self.write_state()

    async def notes(self) -> list[str]:
        return list(self.state.get("notes", []))


class ChainHop(Hop):
    """Lets its own call chain back in (the mailbox decides how it runs)."""

    allow_call_chain_reentrancy = True


class ReentrantHop(Hop):
    reentrant = True
