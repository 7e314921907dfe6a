"""The grain authoring API: subclass :class:`Grain`, write public ``async def`` methods.

A grain is a virtual actor: it always exists conceptually, is activated on
demand, loads ``self.state`` from the store as it activates, and runs one call
at a time. Only the public ``async def`` methods that a subclass defines are
reachable from the wire (see :mod:`silo.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from grainery.silo.call import CallContext, call_context

if TYPE_CHECKING:
    from grainery.client.grain_ref import GrainRef
    from grainery.silo.activation import ActivationContext
    from grainery.silo.blocking import BlockingPool

T = TypeVar("T")


class Grain:
    """Base class of every grain.

    Class attributes a subclass may set:
    - ``grain_type``: the wire name of the type (default: the class name);
    - ``idle_timeout``: seconds of inactivity before deactivation (default: the
      silo's ``--idle-timeout``);
    - ``abstract = True``: a base class that is not registered itself;
    - ``reentrant = True``: calls interleave at ``await`` points (see the README on what
      that means for ``self.state``);
    - ``allow_call_chain_reentrancy = True``: a call made (directly or not) by this grain's
      running call may come back into it instead of failing as a deadlock.
    """

    grain_type: ClassVar[str] = ""
    idle_timeout: ClassVar[float | None] = None
    abstract: ClassVar[bool] = True
    reentrant: ClassVar[bool] = False
    allow_call_chain_reentrancy: ClassVar[bool] = False

    # Instance attributes set by the runtime before on_activate.
    _ctx: ActivationContext
    _blocking: BlockingPool
    state: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "grain_type" not in cls.__dict__:
            cls.grain_type = cls.__name__
        if "abstract" not in cls.__dict__:
            cls.abstract = False

    # ----- identity -------------------------------------------------------
    @property
    def key(self) -> str:
        return self._ctx.grain_id.key

    @property
    def silo_id(self) -> str:
        return self._ctx.silo_id

    @property
    def call_context(self) -> CallContext:
        """The running call's request context (``.values``), call chain (``.chain``) and
        seconds left (``.deadline``); grain-to-grain calls made now pass them on."""
        return call_context()

    # ----- lifecycle hooks (not callable from the wire) -------------------
    async def on_activate(self) -> None:
        """Runs once per activation, after ``self.state`` is loaded."""

    async def on_deactivate(self, reason: str) -> None:
        """Runs before the activation is dropped (reason: idle, shutdown, rebalance, ...)."""

    # ----- state ----------------------------------------------------------
    async def write_state(self) -> None:
        """Persist ``self.state``; durable once this returns.

        Raises StaleStateError if the stored state changed behind this
        activation's back, and ActivationFencedError if a newer activation of
        this grain exists; neither overwrites anything.
        """
        await self._ctx.write_state(self.state)

    async def read_state(self) -> None:
        """Reload ``self.state`` from the store, discarding unsaved changes."""
        self.state = await self._ctx.read_state()

    async def clear_state(self) -> None:
        """Delete the stored state (the version keeps counting) and reset ``self.state``."""
        await self._ctx.clear_state()
        self.state = {}

    # ----- other grains ---------------------------------------------------
    def get_grain(self, grain_type: str, key: str) -> GrainRef:
        """A reference to another grain; ``await ref.method(...)`` calls it."""
        return self._ctx.get_grain(grain_type, key)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run synchronous code (a blocking SDK call, CPU-heavy work) on the silo's bounded
        thread pool and await its result, so other grains keep running meanwhile.

        The turn still waits for it: the grain's next call starts after it returns.
        Calling such code directly in a method blocks every grain on the silo.
        """
        return await self._blocking.run(fn, *args)

    def deactivate_on_idle(self) -> None:
        """Ask the runtime to deactivate this grain once the current call ends."""
        self._ctx.request_deactivation("requested")


# Names of the base class's own members: never callable from the wire, even if a
# subclass overrides them.
RESERVED_NAMES: frozenset[str] = frozenset(
    name for klass in Grain.__mro__ for name in vars(klass)
) | {"grain_type", "key", "silo_id", "state"}
