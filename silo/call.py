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
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context

# Shared, read-only "nothing": most calls carry no keyword arguments and no request
# context, and must not pay for two new dicts each (a filter that writes to a call's
# context gets a dict of its own first, see grainery.client.filters.Call.context).
EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(slots=True, eq=False)
class GrainCall:
    """A validated call: target grain, method, decoded arguments, and its absolute deadline
    on the silo's event-loop clock (``loop.time()``), which every hop honours."""

    grain_type: str
    key: str
    method: str
    args: list[Any]
    kwargs: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    deadline: float = 0.0
    hops: int = 0
    # The request context: string key/values the caller set, passed on through every hop.
    context: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    # The grain activations this call passed through, outermost first ("Type/key"); a
    # call from a client has none. A grain-to-grain call's chain is its caller's chain
    # plus the caller.
    chain: tuple[str, ...] = ()
    # A runtime hook call (silo/hooks.py), made by the runtime, never by a client.
    system: bool = False
    # Tracing (silo/tracing.py): the OpenTelemetry context of the call's SERVER span, which
    # its turn runs in; None when the call is not traced (always, with tracing off).
    trace: Context | None = None

    @property
    def activation(self) -> str:
        """``Type/key``: how the call's target appears in a call chain."""
        return f"{self.grain_type}/{self.key}"

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


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a turn knows about the call it serves (``Grain.call_context``), read-only.

    - ``values``: the request context (str -> str) the caller set, as received;
    - ``chain``: ``"Type/key"`` of the grain activations the call passed through, outermost
      first (empty for a call straight from a client; a grain never sees itself in it);
    - ``deadline``: seconds the call has left *now* (relative, because the silo's clock is
      not the caller's; it shrinks as the turn runs), or None outside a call.
    """

    values: Mapping[str, str]
    chain: tuple[str, ...]
    _expires: float | None = None

    @property
    def deadline(self) -> float | None:
        if self._expires is None:
            return None
        return self._expires - asyncio.get_running_loop().time()


NO_CALL = CallContext(MappingProxyType({}), ())


def call_context() -> CallContext:
    """The context of the call the running turn serves (empty outside a turn, e.g. in
    ``on_activate``, which runs for no one call in particular)."""
    call = CURRENT_CALL.get()
    if call is None:
        return NO_CALL
    return CallContext(MappingProxyType(call.context), call.chain, call.deadline)


def outgoing_chain(caller: GrainCall) -> tuple[str, ...]:
    """The chain of a call made by ``caller``'s turn: its chain plus the caller itself."""
    return (*caller.chain, caller.activation)


def cycle_of(chain: tuple[str, ...], target: str) -> str | None:
    """The cycle a call to ``target`` ("Type/key") would close, as ``A/1 -> B/2 -> A/1``;
    None if ``target`` is not in the chain."""
    if target not in chain:
        return None
    start = chain.index(target)
    return " -> ".join((*chain[start:], target))
