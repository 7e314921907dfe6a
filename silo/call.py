"""The one value a call is inside a silo, and the call the running turn belongs to.

Why one value: the dispatcher validates a wire request once and from then on every
stage (routing, forwarding, the activation's mailbox, the turn itself) works on this
small object rather than on the protobuf message, so what a call *is* (target,
arguments, absolute deadline) is stated in one place that later features (call
context, call chains, filters) can extend.

Why a context variable: grain code calls other grains through an SDK that knows
nothing about the turn it runs in. The activation sets :data:`CURRENT_CALL` at the
start of every turn, so a grain-to-grain call made from inside the turn can find the
caller's deadline and never wait longer than the caller will.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class GrainCall:
    """A validated call: target grain, method, decoded arguments, and its absolute deadline
    on the silo's event-loop clock (``loop.time()``), which every hop honours."""

    grain_type: str
    key: str
    method: str
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0
    hops: int = 0
    # The request context: string key/values the caller set, passed on through every hop.
    context: dict[str, str] = field(default_factory=dict)
    # The grain activations this call passed through, outermost first ("Type/key"); a
    # call from a client has none. A grain-to-grain call's chain is its caller's chain
    # plus the caller.
    chain: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """``Type/key.method``, as error messages and logs name a call."""
        return f"{self.grain_type}/{self.key}.{self.method}"

    def remaining(self, loop: asyncio.AbstractEventLoop) -> float:
        """Seconds left before the deadline (negative once it passed)."""
        return self.deadline - loop.time()


# The call whose turn is running in this task (None outside a turn).
CURRENT_CALL: ContextVar[GrainCall | None] = ContextVar("grainery_current_call", default=None)


def current_call() -> GrainCall | None:
    """The call being served by the running turn, if any."""
    return CURRENT_CALL.get()
