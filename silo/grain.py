"""The grain authoring API: subclass :class:`Grain`, write public ``async def`` methods.

A grain is a virtual actor: it always exists conceptually, is activated on
demand, loads ``self.state`` from the store as it activates, and runs one call
at a time. Only the public ``async def`` methods that a subclass defines are
reachable from the wire (see :mod:`silo.registry`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from grainery.silo.call import CallContext, call_context
from grainery.silo.decorators import interleave
from grainery.silo.reminders import grain_api as reminders
from grainery.silo.reminders.model import ReminderInfo, ReminderTick
from grainery.silo.reminders.runtime import dispatch_runtime_reminder
from grainery.silo.streams import grain_api as streams
from grainery.silo.timers import GrainTimer, Timers

if TYPE_CHECKING:
    from grainery.client.filters import Call, Proceed
    from grainery.client.grain_ref import GrainRef
    from grainery.silo.activation import Activation, ActivationContext
    from grainery.silo.blocking import BlockingPool
    from grainery.silo.durable.retry import RetryPolicy
    from grainery.silo.journal.journal import Journal
    from grainery.silo.streams.grain_api import GrainStream

T = TypeVar("T")


class StatelessWorkerStateError(TypeError):
    """Grain code of a ``@stateless_worker`` used the state API (``self.state``,
    ``write_state``, ``read_state``, ``clear_state``): stateless workers have no stored state.

    A TypeError because it is a mistake in the grain's code, not a runtime condition: the
    caller receives it as an application error (``error_type`` ``StatelessWorkerStateError``).
    """

    def __init__(self, cls: type) -> None:
        super().__init__(
            f"stateless workers have no stored state: {cls.__qualname__} is a "
            f"@stateless_worker, so self.state, write_state, read_state and clear_state are "
            f"not available (keep per-activation data in other attributes, or call a grain "
            f"that owns the state)"
        )


# What a stateless worker's context hands back as "the state as last persisted" when a turn
# failed: the runtime restores ``self.state`` after every failed turn, and for a worker that
# restore must be a no-op rather than an error or a way to give the worker a state after all.
NO_STORED_STATE: dict[str, Any] = {}


class _NoStoredState:
    """The ``state`` attribute of a stateless worker class: reading or assigning it raises
    :class:`StatelessWorkerStateError` (a data descriptor, so an instance attribute can never
    shadow it); only the runtime's restore of :data:`NO_STORED_STATE` is accepted, and ignored.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        raise StatelessWorkerStateError(type(instance))

    def __set__(self, instance: object, value: Any) -> None:
        if value is not NO_STORED_STATE:
            raise StatelessWorkerStateError(type(instance))


def refuse_state(cls: type[Grain]) -> None:
    """Make ``self.state`` of ``cls`` (a stateless worker class) raise; idempotent. Only
    worker classes get the descriptor: every other grain keeps a plain instance attribute."""
    if not isinstance(vars(cls).get("state"), _NoStoredState):
        cls.state = _NoStoredState()  # type: ignore[assignment]


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

    A class marked ``@stateless_worker(max_local=N)`` has no stored state: ``self.state`` and
    the state methods raise :class:`StatelessWorkerStateError` (see silo/workers.py).
    """

    grain_type: ClassVar[str] = ""
    idle_timeout: ClassVar[float | None] = None
    abstract: ClassVar[bool] = True
    reentrant: ClassVar[bool] = False
    allow_call_chain_reentrancy: ClassVar[bool] = False
    # Journal retention: entries kept per grain (silo/journal/store.py has the policy).
    journal_max_entries: ClassVar[int] = 1000
    # Whether the class overrides on_incoming_call: a grain without the hook pays nothing.
    _filters_calls: ClassVar[bool] = False

    # Instance attributes set by the runtime before on_activate.
    _ctx: ActivationContext
    _blocking: BlockingPool
    _activation: Activation
    state: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "grain_type" not in cls.__dict__:
            cls.grain_type = cls.__name__
        if "abstract" not in cls.__dict__:
            cls.abstract = False
        cls._filters_calls = cls.on_incoming_call is not Grain.on_incoming_call
        hook = getattr(cls, "receive_reminder", None)  # defined here or by a mixin
        if hook is not None:  # its tick arrives as JSON: give it a ReminderTick
            cls.receive_reminder = reminders.decoding_tick(hook)  # type: ignore[attr-defined]

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

    async def on_incoming_call(self, call: Call, proceed: Proceed) -> Any:
        """Override to run code around every call of this grain, inside its turn (innermost,
        after the silo's filters): ``return await proceed()`` runs the method; read
        ``call.method``, ``call.args``, ``call.context``; raise to refuse the call
        (``PermissionError`` gives the caller ``permission_denied``) or return another
        result. Grain-to-grain calls from this grain are not filtered by it."""
        return await proceed()

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

    def register_timer(
        self,
        callback: Callable[[], Awaitable[Any]],
        due: float,
        period: float | None = None,
        interleave: bool = False,
        keep_alive: bool = False,
    ) -> GrainTimer:
        """Run ``callback`` (an async method of this grain, no arguments) ``due`` seconds
        from now, then every ``period`` seconds (None: once), as a turn of this grain, in
        turn order (``interleave=True``: interleaved, like an ``@interleave`` call).

        In memory only: the timer dies with the activation. A tick still queued or running
        when the next is due makes that next one skipped, not stacked. A tick that raises
        is logged and counted; the timer keeps going. Ticks do not keep the grain from being
        collected as idle unless ``keep_alive=True``. ``handle.cancel()`` stops it. Limits
        and errors: silo/timers.py and the README's "Timers"."""
        activation = self._activation
        if activation.timers is None:
            activation.timers = Timers(activation)
        return activation.timers.register(self, callback, due, period, interleave, keep_alive)

    # ----- reminders (durable; silo/reminders/) ---------------------------
    async def register_reminder(self, name: str, due: float, period: float) -> None:
        """Create (or replace) the durable reminder ``name`` of this grain: its first tick
        ``due`` seconds from now, then every ``period`` seconds, each delivered to
        ``async def receive_reminder(self, name, tick: ReminderTick)`` as a turn of this
        grain, activating it if needed, until ``unregister_reminder(name)``.

        Kept in Redis: it survives deactivation, restarts and silo crashes (at-least-once;
        see the README's "Reminders"). Replacing one restarts its schedule. Raises ValueError
        for a bad name (empty, over 150 characters, control characters, starting with "$"),
        ``due`` outside [0, a year], ``period`` outside [1 s, a year], or beyond 100
        reminders per grain."""
        await reminders.register(self, name, due, period, runtime=False)

    async def unregister_reminder(self, name: str) -> bool:
        """Remove the reminder; False if there was none. Allowed inside its own tick."""
        return await reminders.unregister(self, name, runtime=False)

    async def list_reminders(self, include_runtime: bool = False) -> list[ReminderInfo]:
        """This grain's reminders (name, period, next due time, ...), by name; the runtime's
        own ``$`` reminders only with ``include_runtime=True``."""
        return await reminders.listing(self, include_runtime)

    # Interleaved (durable agents): a runtime tick must not queue as a writer behind a
    # durable run's long step, holding back the @read_only queries behind it; a handler that
    # needs the grain's turn takes it itself (silo/durable/gate.py).
    @interleave
    async def on_runtime_reminder(self, name: str, tick: ReminderTick) -> None:
        """Runtime hook: a ``$`` reminder fired; runs the handler registered for its name in
        ``silo.reminders.runtime.RUNTIME_REMINDERS``. Not for grain code to override."""
        await dispatch_runtime_reminder(self, name, tick)

    async def _register_runtime_reminder(self, name: str, due: float, period: float) -> None:
        """The runtime's way (e.g. durable agents) to keep a ``$``-named reminder on this
        grain; delivered to the handler in RUNTIME_REMINDERS, never to receive_reminder, and
        not counted in the per-grain limit. See silo/reminders/runtime.py."""
        await reminders.register(self, name, due, period, runtime=True)

    async def _unregister_runtime_reminder(self, name: str) -> bool:
        return await reminders.unregister(self, name, runtime=True)
    # ----- streams (silo/streams/) ----------------------------------------
    def get_stream(self, namespace: str, key: str) -> GrainStream:
        """The stream ``(namespace, key)``: ``token = await stream.publish(event)``."""
        return streams.get_stream(self, namespace, key)

    async def subscribe(self, namespace: str, key: str) -> bool:
        """Subscribe this grain to the stream's events published from now on; they reach
        ``on_stream_event(namespace, key, event, token)`` (at-least-once, in order). Stored in
        Redis: it outlives this activation and silo restarts. False if already subscribed."""
        return await streams.subscribe(self, namespace, key)

    async def unsubscribe(self, namespace: str, key: str) -> bool:
        """End the explicit subscription (False if there was none)."""
        return await streams.unsubscribe(self, namespace, key)

    async def _deliver_stream_events(self, namespace: str, key: str,
                                     events: list[list[str]]) -> int:
        """Runtime hook: the pump delivers several events of a stream in one turn (see
        silo/streams/grain_api.py); not callable from the wire."""
        return await streams.deliver_events(self, namespace, key, events)

    def deactivate_on_idle(self) -> None:
        """Ask the runtime to deactivate this grain once the current call ends."""
        self._ctx.request_deactivation("requested")

    # ----- durable agents (silo/journal/, silo/durable/) -------------------
    @property
    def journal(self) -> Journal:
        """The grain's append-only, fenced journal: ``await self.journal.append(kind,
        data)``, ``await self.journal.read(after=SEQ, limit=N)``."""
        from grainery.silo.journal.journal import Journal

        return Journal(self._ctx, self.journal_max_entries)

    async def step(
        self, name: str, fn: Callable[..., Any], *args: Any, retry: RetryPolicy | None = None
    ) -> Any:
        """Inside a ``@durable`` method: run ``fn(*args)`` (async, a grain reference's method,
        or sync on the blocking pool), retried per ``retry`` (default RetryPolicy()), and
        record its result (or final error, raised as StepFailedError) before returning. On
        replay a recorded step returns its recorded result without running."""
        from grainery.silo.durable.run import current_run

        return await current_run("self.step()").step(name, fn, args, retry)

    @property
    def step_key(self) -> str:
        """Inside a step's function: ``Type/key/run-N/name#k``, the same on every re-run of
        that step (an idempotency key for effects outside Grainery)."""
        from grainery.silo.durable.run import STEP_KEY

        key = STEP_KEY.get()
        if key is None:
            raise RuntimeError("self.step_key exists only while a durable step's fn runs")
        return key

    async def sleep(self, seconds: float) -> None:
        """Inside a ``@durable`` method: a sleep that survives restarts (its end is recorded
        as a wall-clock time); the grain serves other calls meanwhile."""
        from grainery.silo.durable.run import current_run

        _check_seconds("sleep", seconds)
        await current_run("self.sleep()").wait("sleep", None, float(seconds))

    async def wait_signal(self, name: str, timeout: float | None = None) -> Any:
        """Inside a ``@durable`` method: wait for the signal ``name`` (sent with
        ``ref.signal(name, payload)``, buffered if it came first) and return its payload;
        TimeoutError after ``timeout`` seconds. Survives restarts; the grain serves other
        calls meanwhile."""
        from grainery.silo.durable.run import current_run

        if timeout is not None:
            _check_seconds("wait_signal timeout", timeout)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a signal name must be a non-empty str, not {name!r}")
        return await current_run("self.wait_signal()").wait(f"signal:{name}", name, timeout)

    # Runtime hooks (silo/hooks.py) behind the Management RPCs Signal, CancelRun, RunStatus;
    # interleaved, so they reach the grain while its run executes or waits.
    @interleave
    async def on_durable_signal(self, name: str, payload: Any, signal_id: str = "") -> int:
        from grainery.silo.durable.control import durable_runtime

        return await durable_runtime(self).signal(name, payload, signal_id)

    @interleave
    async def on_durable_cancel(self, run: int, reason: str) -> dict[str, Any]:
        from grainery.silo.durable.control import durable_runtime

        return await durable_runtime(self).cancel(run, reason)

    @interleave
    async def on_durable_status(self, run: int, wait: float) -> dict[str, Any]:
        from grainery.silo.durable.control import durable_runtime

        return await durable_runtime(self).status(run, wait)


def _check_seconds(what: str, seconds: object) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not 0 <= seconds <= 366 * 24 * 3600:
        raise ValueError(f"{what} must be a number of seconds in [0, one year], not {seconds!r}")


# The durable-agent API came after grains had methods of these names (a ``sleep`` method is
# common): a subclass's own method of such a name stays callable from the wire, and shadows
# the API on that class (its durable methods then cannot use that part of it).
DURABLE_API_NAMES: frozenset[str] = frozenset({"step", "step_key", "sleep", "wait_signal",
                                               "journal"})

# Names of the base class's own members: never callable from the wire, even if a
# subclass overrides them.
RESERVED_NAMES: frozenset[str] = (frozenset(
    name for klass in Grain.__mro__ for name in vars(klass)
) - DURABLE_API_NAMES) | {"grain_type", "key", "silo_id", "state"}
