"""One live grain instance and its mailbox: which of its calls may run, and when.

Turns. Every call runs as a *turn*. By default a grain runs one turn at a time, in
arrival order: calls wait in a bounded FIFO and a short-lived pump task drains it,
running each turn inline, so an idle grain costs no task and a plain call costs no
task of its own. Some turns may *interleave*: start while other turns of the same
activation wait at an ``await`` (still one event loop, so no two run Python code at
the same instant). Each interleaved turn is a task of its own. Which may:

- ``reentrant = True`` on the class, or ``@interleave`` on the method: the turn
  interleaves with anything and never holds the grain (others start while it waits).
- ``@read_only``: read-only turns interleave with each other, never with a writer
  (any other turn that is not interleaving). Fairness is FIFO: a writer waiting at the
  head of the queue holds back the readers behind it, so readers cannot starve it.
- A call whose ``GrainCall.chain`` names this activation while one of its turns is
  running came back through its own call chain; it starts at once, past any queue, on
  a grain with ``allow_call_chain_reentrancy`` (and on a grain or method that
  interleaves anyway). Queueing it behind the turn that waits for it would deadlock.

A turn is never cancelled by its caller: if the caller gives up (deadline, disconnect)
while the call is still queued, the call is skipped; once started, the turn runs to the
end, so grain code never stops halfway between changing and writing its state. Every
turn checks, as it starts, that the silo still trusts its lease (``may_start``) and
that its deadline has not passed. Deactivation is the last turn: it starts only once
every running turn, interleaved or not, has finished.

State after a failed turn (as in Dapr): a turn that raises, or in which a state write
failed, leaves ``self.state`` as last persisted. The activation keeps the last
persisted JSON bytes and decodes them again only on failure, so success costs nothing
extra. After a write whose outcome is unknown (the store did not answer), the state is
reloaded from the store before the next turn. When turns interleave, a failed write
counts as a failure of every turn in progress (they share ``self.state``; a counter of
failed writes is compared before and after each turn), and both happen only
while no turn runs: a failure while other turns run holds back new turns (a *barrier*;
calls that come back through their own chain still pass) until the running ones end,
then restores. Restoring earlier would let a write that is still in flight land under a
``self.state`` that lacks it, and the next write would silently undo an acknowledged
one; restoring when all are done gives the state with every write that succeeded.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from grainery.client.errors import (
    ActivationFailedError,
    ActivationFencedError,
    DeadlineExceededError,
    OverloadedError,
    SiloUnavailableError,
    StaleStateError,
    StorageUnavailableError,
)
from grainery.client.routing import GrainId
from grainery.client.tasks import spawn
from grainery.silo.call import CURRENT_CALL, GrainCall
from grainery.silo.dashboard.activity import GrainActivity
from grainery.silo.filters import incoming_call
from grainery.silo.storage.pool import NotSentError
from grainery.silo.storage.protocols import GrainStorage
from grainery.silo.storage.redis_state import Fence
from grainery.silo.storage.state_codec import EMPTY, decode_state, encode_state
from grainery.silo.tracing import clear_context as clear_trace_context
from grainery.silo.tracing import start_turn

if TYPE_CHECKING:
    from grainery.client.grain_ref import GrainRef
    from grainery.silo.durable.runtime import DurableRuntime
    from grainery.silo.grain import Grain
    from grainery.silo.journal.store import RedisJournalStore
    from grainery.silo.metrics import SiloMetrics
    from grainery.silo.registry import GrainType, MethodSpec
    from grainery.silo.reminders.registry import Reminders
    from grainery.silo.timers import Timers

log = logging.getLogger("grainery.activation")


class Phase(enum.Enum):
    ACTIVATING = "activating"
    ACTIVE = "active"
    DEACTIVATING = "deactivating"
    GONE = "gone"


class Redispatch(Exception):
    """The activation is going away; the caller should wait for it and resolve again."""


@dataclass(slots=True)
class ActivationContext:
    """What a grain instance knows about its activation (``Grain._ctx``)."""

    grain_id: GrainId
    silo_id: str
    storage: GrainStorage
    fence: Fence
    etag: str
    grain_ref_factory: Callable[[str, str], GrainRef]
    journal_store: RedisJournalStore | None = None  # None: no journal (in-process twins)
    deactivation_request: str | None = None  # reason, applied after the current turn
    persisted: bytes = EMPTY  # the state's JSON as last persisted (restored after a failure)
    write_failures: int = 0  # writes or clears that raised (a turn compares before/after)
    uncertain: bool = False  # a write may or may not have landed: reload before the next turn
    reminders: Reminders | None = None  # the silo's reminder API (None: stateless workers)

    async def write_state(self, state: dict[str, Any]) -> None:
        try:
            payload = encode_state(state)  # refuses what JSON would not give back unchanged
        except (TypeError, ValueError):
            self.write_failures += 1
            raise
        self.etag = await self._compare_and_set(
            self.storage.write(self.grain_id, payload, self.etag, self.fence)
        )
        self.persisted = payload

    async def read_state(self) -> dict[str, Any]:
        stored = await self.storage.read(self.grain_id)
        self.etag, self.persisted, self.uncertain = stored.etag, stored.raw, False
        return stored.data

    async def clear_state(self) -> None:
        self.etag = await self._compare_and_set(
            self.storage.clear(self.grain_id, self.etag, self.fence)
        )
        self.persisted = EMPTY

    def last_persisted(self) -> dict[str, Any]:
        return decode_state(self.persisted)

    async def _compare_and_set(self, write: Awaitable[str]) -> str:
        """A refused write leaves this activation's state stale: deactivate after the turn,
        so the next call reloads (conflict) or reaches the newer activation (fenced).
        An unanswered write may have landed: reload before the next turn."""
        try:
            return await write
        except StaleStateError:
            self.write_failures += 1
            self.request_deactivation("conflict")
            raise
        except ActivationFencedError:
            self.write_failures += 1
            self.request_deactivation("fenced")
            raise
        except StorageUnavailableError as exc:
            self.write_failures += 1
            self.uncertain = not isinstance(exc.__cause__, NotSentError)
            raise
        except BaseException:
            self.write_failures += 1
            raise

    def get_grain(self, grain_type: str, key: str) -> GrainRef:
        return self.grain_ref_factory(grain_type, key)

    def request_deactivation(self, reason: str) -> None:
        if self.deactivation_request is None:
            self.deactivation_request = reason


# How a call may run (see the module docstring); small ints, compared on every call.
EXCLUSIVE = 0  # the default: alone among non-interleaving turns
READ_ONLY = 1  # @read_only: with other read-only turns, never with an exclusive one
INTERLEAVE = 2  # reentrant grain or @interleave method: with anything
CHAIN = 3  # came back through its own call chain: at once, past the queue and any barrier


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[Any]
    method: MethodSpec
    call: GrainCall
    mode: int = EXCLUSIVE
    tick: bool = False  # a timer's tick (silo/timers.py): no call filter runs around it
    activity: bool = True  # ending it counts as activity for the idle collector


@dataclass(eq=False)
class _Deactivate:
    reason: str
    unregister: bool


class Activation:
    __slots__ = (
        "_exclusive",
        "_gone",
        "_loop",
        "_may_start",
        "_on_deactivate",
        "_pump",
        "_queue",
        "_readers",
        "_restore_pending",
        "activity",
        "context",
        "durable",
        "grain",
        "grain_id",
        "grain_type",
        "last_active",
        "max_queue",
        "metrics",
        "phase",
        "timers",
        "turns",
    )

    def __init__(
        self,
        grain_id: GrainId,
        grain_type: GrainType,
        max_queue: int,
        on_deactivate: Callable[[Activation, _Deactivate], Any],
        may_start: Callable[[], bool] = lambda: True,
        metrics: SiloMetrics | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()  # cached: get_running_loop() costs a getpid()
        self.grain_id = grain_id
        self.grain_type = grain_type
        self.phase = Phase.ACTIVATING
        self.grain: Grain | None = None
        self.context: ActivationContext | None = None
        self.last_active = time.monotonic()
        self.max_queue = max_queue
        # Turns in progress, of every kind (the catalog counts on_activate as one).
        self.turns = 0
        self._exclusive = False  # an EXCLUSIVE turn is running
        self._readers = 0  # READ_ONLY turns running
        self._restore_pending = False  # a turn failed while others ran: restore when none do
        self._gone: asyncio.Event | None = None
        self._queue: deque[_Call | _Deactivate] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._on_deactivate = on_deactivate
        self._may_start = may_start  # the silo's lease is trusted (checked at turn start)
        self.metrics = metrics  # for the timers' tick counts (None in bare unit tests)
        self.timers: Timers | None = None  # created by the grain's first register_timer
        self.durable: DurableRuntime | None = None  # durable runs (silo/durable/runtime.py)
        self.activity = GrainActivity()  # its recent calls, for the dashboard's top grains

    async def wait_gone(self) -> None:
        """Wait until the activation has finished deactivating (or was abandoned)."""
        if self.phase is Phase.GONE:
            return
        if self._gone is None:
            self._gone = asyncio.Event()
        await self._gone.wait()

    def mark_gone(self) -> None:
        self.phase = Phase.GONE
        self._cancel_timers()
        if self.durable is not None:
            self.durable.detach()
        if self._gone is not None:
            self._gone.set()

    @property
    def running(self) -> bool:
        """Some turn (or on_activate) is in progress."""
        return self.turns > 0

    @property
    def idle(self) -> bool:
        return self.phase is Phase.ACTIVE and not self.turns and not self._queue

    @property
    def queued(self) -> int:
        return len(self._queue) if self._queue else 0

    def _mode(self, method: MethodSpec, call: GrainCall) -> int:
        grain_type = self.grain_type
        interleaves = grain_type.reentrant or method.interleave
        if (
            call.chain and self.turns
            and (interleaves or grain_type.call_chain_reentrant)
            and str(self.grain_id) in call.chain
        ):
            return CHAIN
        if interleaves:
            return INTERLEAVE
        return READ_ONLY if method.read_only else EXCLUSIVE

    def call(self, method: MethodSpec, call: GrainCall) -> asyncio.Future[Any]:
        """Start or queue a call; the returned future resolves with its result.

        Bound: at most ``max_queue`` calls wait, and interleaved turns beyond the first
        count against the same bound (a grain holds at most ``max_queue + 1`` calls)."""
        if self.phase is not Phase.ACTIVE:
            raise Redispatch()
        queued, turns = self.queued, self.turns
        if queued + (turns - 1 if turns > 1 else 0) >= self.max_queue:
            message = f"{self.grain_id} has {queued} calls queued (limit {self.max_queue})"
            if turns > 1:
                message += f" and {turns} turns in progress (beyond the first, they count too)"
            raise OverloadedError(message)
        future: asyncio.Future[Any] = self._loop.create_future()
        item = _Call(future, method, call, self._mode(method, call))
        mode = item.mode
        if mode != EXCLUSIVE and (mode != READ_ONLY or not self._queue) and self._startable(item):
            if self._admissible(item):
                self._spawn_turn(item)
        else:
            self._enqueue(item)
        return future

    def deactivate(self, reason: str, unregister: bool = True) -> None:
        """Start deactivating after the calls already queued and every running turn;
        later calls are redispatched."""
        if self.phase is not Phase.ACTIVE:
            return
        self.phase = Phase.DEACTIVATING
        self._cancel_timers()  # ticks already queued run first; none is queued after this
        if self.durable is not None:
            self.durable.leaving()  # a waiting durable run stops; the journal has it
        self._enqueue(_Deactivate(reason, unregister))

    def abandon(self) -> None:
        """Fencing: no further turn starts; those running (if any) may finish. Queued
        calls fail as retry-safe UNAVAILABLE: they never ran, and a fenced silo cannot
        resolve them again."""
        for item in self._queue or ():
            if isinstance(item, _Call) and not item.future.done():
                item.future.set_exception(SiloUnavailableError(
                    f"silo fenced while {self.grain_id}.{item.method.name} was queued; not run"
                ))
        self._queue = None
        self.mark_gone()

    # ----- timers (silo/timers.py) -----------------------------------------
    @property
    def accepts_timers(self) -> bool:
        """Timers may be registered from on_activate on, until deactivation begins."""
        return self.phase is Phase.ACTIVE or self.phase is Phase.ACTIVATING

    def tick(
        self, method: MethodSpec, call: GrainCall, interleaved: bool, keep_alive: bool,
        read_only: bool = False,
    ) -> asyncio.Future[Any] | None:
        """Run or queue one timer tick as a turn (interleaved, or in turn order like a
        call); None if the activation is not active. Not bounded by ``max_queue``: each
        timer has at most one tick queued or running, and timers are bounded.
        ``read_only``: the turn of a durable run (silo/durable/gate.py), in turn order and
        with read-only calls beside it, like a @read_only call."""
        if self.phase is not Phase.ACTIVE:
            return None
        future: asyncio.Future[Any] = self._loop.create_future()
        mode = INTERLEAVE if interleaved else READ_ONLY if read_only else EXCLUSIVE
        item = _Call(future, method, call, mode, True, keep_alive)
        if interleaved and self._startable(item):
            if self._admissible(item):
                self._spawn_turn(item)
        else:
            self._enqueue(item)
        return future

    def _cancel_timers(self) -> None:
        if self.timers is not None:
            self.timers.cancel_all()

    # ----- scheduling -----------------------------------------------------
    def _startable(self, item: _Call) -> bool:
        """May ``item`` start now, given the turns running (FIFO is the caller's concern)?"""
        mode = item.mode
        if mode == CHAIN:
            return True
        context = self.context
        if self._restore_pending or (context is not None and context.uncertain):
            return not self.turns  # the barrier: restore or reload with nothing running
        if mode == INTERLEAVE:
            return True
        if mode == READ_ONLY:
            return not self._exclusive
        return not self._exclusive and not self._readers

    def _admissible(self, item: _Call) -> bool:
        """The checks every turn passes as it starts; a call that fails one is answered
        here and never run."""
        if item.future.done():
            return False  # the caller gave up while queued: never run it
        if not self._may_start():  # fenced, perhaps before the loop heard of it
            item.future.set_exception(SiloUnavailableError(
                f"silo fenced before {self.grain_id}.{item.method.name} could start; not run"
            ))
            return False
        if self._loop.time() > item.call.deadline:
            item.future.set_exception(DeadlineExceededError(
                f"deadline passed while {self.grain_id}.{item.method.name} was queued; not run"
            ))
            return False
        return True

    def _enqueue(self, item: _Call | _Deactivate) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        self._kick()

    def _kick(self) -> None:
        """Make sure a pump drains the queue (it stops when the head has to wait; the end
        of a turn calls this again). The activation holds the pump's reference and
        ``_drain`` logs its own failures: on the hot path (a pump per call to an idle grain)
        it costs one task and nothing more."""
        if self._pump is None or self._pump.done():
            self._pump = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        except Exception:  # a bug in the mailbox itself: grain failures never reach here
            log.exception("the mailbox of %s failed", self.grain_id)

    async def _drain_queue(self) -> None:
        # The pump inherited the context of the call that created it: no turn of this grain
        # may see that caller's call (and its deadline) as its own, nor its trace.
        CURRENT_CALL.set(None)
        clear_trace_context()
        while self._queue:
            item = self._queue[0]
            if isinstance(item, _Deactivate):
                if self.turns:
                    return  # the last turn to end kicks the pump again
                self._pop()
                await self._on_deactivate(self, item)
                continue
            if not self._startable(item):
                return
            self._pop()
            if not self._admissible(item):
                continue
            if item.mode == EXCLUSIVE:
                self._begin(item)
                await self._turn(item)  # inline: the common case costs no task
            else:
                self._spawn_turn(item)

    def _pop(self) -> None:
        assert self._queue is not None
        self._queue.popleft()
        if not self._queue:
            self._queue = None  # an idle grain keeps no deque

    # ----- turns ----------------------------------------------------------
    def _begin(self, call: _Call) -> None:
        """Count the turn as running; synchronous, so nothing can start in between."""
        self.turns += 1
        if call.mode == EXCLUSIVE:
            self._exclusive = True
        elif call.mode == READ_ONLY:
            self._readers += 1

    def _spawn_turn(self, call: _Call) -> None:
        self._begin(call)
        spawn(self._turn(call), name=f"grain {self.grain_id}.{call.method.name}")

    async def _run_turn(self, call: _Call) -> None:
        self._begin(call)
        await self._turn(call)

    async def _turn(self, call: _Call) -> None:
        assert self.grain is not None and self.context is not None
        context, failed = self.context, True
        token = CURRENT_CALL.set(call.call)  # grain-to-grain calls inherit its deadline
        # A traced call's turn runs in its trace (grain-to-grain calls become its children).
        traced = None if call.call.trace is None else start_turn(call.call)
        error: BaseException | None = None
        try:
            if context.uncertain:
                await self._reload_state(call)
            failures = context.write_failures
            if self.grain._filters_calls and not call.tick:  # on_incoming_call, around it
                result = await incoming_call(self.grain, call.call, partial(
                    call.method.func, self.grain, *call.call.args, **call.call.kwargs
                ))
            else:
                result = await call.method.func(self.grain, *call.call.args, **call.call.kwargs)
            failed = context.write_failures != failures
        except asyncio.CancelledError as exc:
            error = exc
            if not call.future.done():
                call.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - any grain failure goes to its caller
            error = exc
            if not call.future.done():
                call.future.set_exception(exc)
        else:
            if not call.future.done():
                call.future.set_result(result)
        finally:
            if traced is not None:
                traced.finish(error)
            CURRENT_CALL.reset(token)
            self._end(call, failed)
        reason = context.deactivation_request
        if reason is not None:
            context.deactivation_request = None
            self.deactivate(reason, unregister=reason != "fenced")

    def _end(self, call: _Call, failed: bool) -> None:
        assert self.grain is not None and self.context is not None
        self.turns -= 1
        if call.mode == EXCLUSIVE:
            self._exclusive = False
        elif call.mode == READ_ONLY:
            self._readers -= 1
        if call.activity:
            self.last_active = time.monotonic()
        if failed:
            self._restore_pending = True
        if self._restore_pending and not self.turns:
            self._restore_pending = False
            self.grain.state = self.context.last_persisted()
        if self._queue:
            self._kick()

    async def _reload_state(self, call: _Call) -> None:
        """After an uncertain write: read what is stored, so reads see it and the next write
        names the stored version. If the store is still unreachable, this call fails without
        having run (retry-safe) and the next turn tries again."""
        assert self.grain is not None and self.context is not None
        try:
            self.grain.state = await self.context.read_state()
        except StorageUnavailableError as exc:
            raise ActivationFailedError(
                f"state of {self.grain_id} could not be reloaded after an uncertain write "
                f"({exc.message}); {call.method.name} did not run"
            ) from None
