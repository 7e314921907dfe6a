"""The turns a durable run takes: its code never runs beside a call that writes.

A run is an asyncio task of its own (it must outlive the call that started it, and it may
have no caller at all after a failover). While its code runs, steps included, it *holds a
turn* of the grain: the gate hands the activation's mailbox a turn (:meth:`Activation.tick`,
in turn order, like a call) whose body only says "granted" and then waits to be released.
That turn is a *read-only* turn: ``@read_only`` calls (progress queries) run beside it, any
other call waits for it, exactly as they would beside a ``@read_only`` method. (Grain code
of a run does change ``self.state``; a query may see it halfway, never torn: one thread.)
At a signal wait or a sleep the run releases the turn, so every call, writing ones too, is
served while it waits; before its code continues it queues for a turn again.

If the activation is leaving (deactivating, fenced) the gate refuses with :class:`Detached`,
a BaseException: grain code cannot swallow it, the run stops where it is, and its next
activation replays it from the journal.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from grainery.silo.call import GrainCall

if TYPE_CHECKING:
    from grainery.silo.activation import Activation
    from grainery.silo.grain import Grain
    from grainery.silo.registry import MethodSpec

RUN_BUDGET = 24 * 3600.0  # seconds: the deadline of a run's turn (grain calls use their own)


class Detached(BaseException):  # noqa: N818 - a signal to unwind, not an error
    """The activation running this run is going away: stop; the journal has the progress."""


class TurnGate:
    __slots__ = ("_activation", "_held", "_lock", "_release", "_spec", "method")

    def __init__(self, activation: Activation, method: str) -> None:
        self._activation = activation
        self.method = method
        self._held = False
        self._release: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._spec: MethodSpec | None = None

    @property
    def held(self) -> bool:
        return self._held

    def call(self) -> GrainCall:
        """The call the run's code acts as (grain calls it makes take its chain)."""
        grain = self._activation.grain_id
        loop = asyncio.get_running_loop()
        return GrainCall(grain.grain_type, grain.key, self.method, [],
                         deadline=loop.time() + RUN_BUDGET)

    async def acquire(self) -> None:
        """Wait for a turn of the grain (no-op if held); raises Detached if it is leaving."""
        async with self._lock:
            if self._held:
                return
            loop = asyncio.get_running_loop()
            granted: asyncio.Future[None] = loop.create_future()
            release: asyncio.Future[None] = loop.create_future()

            async def hold(_grain: Grain) -> Any:
                if not granted.done():
                    granted.set_result(None)
                await release

            turn = self._activation.tick(self._turn_spec(hold), self.call(), False, True,
                                          read_only=True)
            if turn is None:
                raise Detached()
            done, _ = await asyncio.wait({granted, turn}, return_when=asyncio.FIRST_COMPLETED)
            if granted not in done:
                release.set_result(None)
                if not turn.cancelled():
                    turn.exception()  # retrieved: it never ran (fenced, deadline)
                raise Detached()
            self._release, self._held = release, True

    def release(self) -> None:
        """Give the turn back (no-op if not held)."""
        release, self._release = self._release, None
        self._held = False
        if release is not None and not release.done():
            release.set_result(None)

    def _turn_spec(self, hold: Any) -> MethodSpec:
        from grainery.silo.registry import MethodSpec

        hold.__name__ = self.method
        return MethodSpec(self.method, hold, 0, 0)
