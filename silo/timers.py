"""Grain timers: in-memory callbacks that run as turns of their grain, gone with the activation.

Why turns: a tick touches ``self.state`` like any call, so it must obey the same mailbox rules
(one turn at a time unless it interleaves, state restored after a failed turn, no turn after
fencing or once deactivation began). A tick is therefore handed to the activation's mailbox as
a call of its own (:meth:`Activation.tick`), not run beside it.

Why skip instead of stack: a tick that is still queued or running when the next one is due is
the sign of a callback slower than its period; queueing more would grow without bound. The
late tick is dropped and counted (``grainery_timer_ticks_total{outcome="skipped"}``).

Why ``loop.call_at``: a timer costs one scheduled handle, no task, while it waits; grains
without timers pay nothing (the activation holds ``timers = None``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grainery.client.errors import DeadlineExceededError, SiloUnavailableError
from grainery.silo.activation import Phase
from grainery.silo.call import GrainCall
from grainery.silo.failures import GRAIN_FAILURES

if TYPE_CHECKING:
    from grainery.silo.activation import Activation
    from grainery.silo.grain import Grain
    from grainery.silo.registry import MethodSpec

MIN_PERIOD = 0.01  # seconds: a shorter period would be a busy loop, not a timer
MAX_DUE = 366 * 24 * 3600.0  # seconds: beyond a year is a reminder's job, not a timer's
MAX_TIMERS = 1000  # live timers per activation: a leak in grain code fails loudly
MIN_TICK_DEADLINE = 1.0  # a tick's deadline is its period, but never shorter than this
ONE_SHOT_DEADLINE = 30.0  # the deadline of a timer's tick when it has no period


class GrainTimer:
    """The handle ``Grain.register_timer`` returns: ``cancel()`` stops it (idempotent, may be
    called from inside its own tick); ``ticks``/``skipped``/``failed`` count what happened."""

    __slots__ = (
        "_handle",
        "_next",
        "_owner",
        "_spec",
        "_started",
        "callback",
        "cancelled",
        "due",
        "failed",
        "interleave",
        "keep_alive",
        "period",
        "running",
        "skipped",
        "ticks",
    )

    def __init__(
        self,
        owner: Timers,
        callback: Callable[[], Awaitable[Any]],
        due: float,
        period: float | None,
        interleave: bool,
        keep_alive: bool,
    ) -> None:
        self._owner = owner
        self.callback = callback
        self.due, self.period = due, period
        self.interleave, self.keep_alive = interleave, keep_alive
        self.running = False  # a tick is queued or running
        self.cancelled = False
        self.ticks = 0  # ticks that ran to the end without raising
        self.failed = 0  # ticks that raised
        self.skipped = 0  # ticks dropped: the previous one had not finished, or never ran
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._started = False  # the current tick's callback began (so its errors are its own)
        self._spec: MethodSpec | None = None  # what the mailbox runs, built once

    @property
    def name(self) -> str:
        return getattr(self.callback, "__name__", "timer")

    def cancel(self) -> None:
        """Stop the timer: no tick starts after this (a running one finishes)."""
        if self.cancelled:
            return
        self.cancelled = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._owner.forget(self)

    def _schedule(self, when: float) -> None:
        self._next = when
        self._handle = self._owner.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self.cancelled:
            return
        loop = self._owner.loop
        if self._owner.activation.phase is Phase.ACTIVATING:
            # Registered in on_activate, which has not returned: the tick is not lost, it
            # waits for the activation to be ready (checked again every MIN_PERIOD).
            self._handle = loop.call_later(MIN_PERIOD, self._fire)
            return
        if self.period is not None:
            now, due = loop.time(), self._next + self.period
            if due <= now:  # the loop was late: keep the phase, drop the missed instants
                due += math.ceil((now - due) / self.period + 1e-9) * self.period
            self._schedule(due)
        else:
            self._owner.forget(self)  # one-shot: gone once fired
        if self.running:
            self._count("skipped")
            return
        self._owner.start_tick(self)

    def _outcome(self, future: asyncio.Future[Any]) -> None:
        """Count a finished tick; grain failures are logged here (rate-limited)."""
        self.running = False
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self._count("ok")
        elif isinstance(exc, (DeadlineExceededError, SiloUnavailableError)) and not self._started:
            self._count("skipped")  # never ran: queued past its deadline, or fenced
        else:
            self._count("failed")
            GRAIN_FAILURES.report(
                self._owner.grain_type, exc,
                f"timer {self.name} of {self._owner.activation.grain_id} raised "
                f"{type(exc).__name__}: {exc}",
            )

    def _count(self, outcome: str) -> None:
        if outcome == "ok":
            self.ticks += 1
        elif outcome == "failed":
            self.failed += 1
        else:
            self.skipped += 1
        metrics = self._owner.activation.metrics
        if metrics is not None:
            metrics.timer_ticks.labels(self._owner.grain_type, outcome).inc()


class Timers:
    """The live timers of one activation (created by the first ``register_timer``)."""

    __slots__ = ("activation", "grain_type", "live", "loop")

    def __init__(self, activation: Activation) -> None:
        self.activation = activation
        self.grain_type = activation.grain_type.name
        self.loop = asyncio.get_running_loop()
        self.live: set[GrainTimer] = set()

    def register(
        self,
        grain: Grain,
        callback: Callable[[], Awaitable[Any]],
        due: float,
        period: float | None,
        interleave: bool,
        keep_alive: bool,
    ) -> GrainTimer:
        check_timer(grain, callback, due, period)
        if not self.activation.accepts_timers:
            raise RuntimeError(
                f"{self.activation.grain_id} is deactivating: no timer may be registered now"
            )
        if len(self.live) >= MAX_TIMERS:
            raise ValueError(
                f"{self.activation.grain_id} already has {len(self.live)} timers "
                f"(limit {MAX_TIMERS} per activation); cancel some first"
            )
        timer = GrainTimer(self, callback, float(due), period, interleave, keep_alive)
        self.live.add(timer)
        timer._schedule(self.loop.time() + due)
        return timer

    def forget(self, timer: GrainTimer) -> None:
        self.live.discard(timer)

    def cancel_all(self) -> None:
        for timer in list(self.live):
            timer.cancel()

    def start_tick(self, timer: GrainTimer) -> None:
        """Hand one tick to the mailbox as a call with a synthetic :class:`GrainCall`: the
        callback's name as method, an empty chain and a bounded deadline, so grain calls made
        from the tick inherit it."""
        activation = self.activation
        period = timer.period
        budget = ONE_SHOT_DEADLINE if period is None else max(period, MIN_TICK_DEADLINE)
        call = GrainCall(
            activation.grain_id.grain_type, activation.grain_id.key, timer.name, [],
            deadline=self.loop.time() + budget,
        )
        if timer._spec is None:
            timer._spec = _tick_spec(timer)
        future = activation.tick(timer._spec, call, timer.interleave, timer.keep_alive)
        if future is None:  # not active (still activating, or already leaving)
            timer._count("skipped")
            return
        timer.running, timer._started = True, False
        future.add_done_callback(timer._outcome)


def _tick_spec(timer: GrainTimer) -> MethodSpec:
    """A MethodSpec whose function runs the timer's callback (the grain is already bound).
    Imported here: the registry imports the grain module, which imports this one."""
    from grainery.silo.registry import MethodSpec

    async def run(_grain: Grain) -> Any:
        timer._started = True
        return await timer.callback()

    run.__name__ = timer.name
    return MethodSpec(timer.name, run, 0, 0, interleave=timer.interleave)


def check_timer(
    grain: Grain, callback: Callable[[], Awaitable[Any]], due: float, period: float | None
) -> None:
    """Refuse, with a clear error, a callback or schedule the runtime cannot honour."""
    if not inspect.ismethod(callback) or callback.__self__ is not grain:
        raise TypeError(
            f"a timer callback must be a method of this grain (self.some_method), "
            f"not {callback!r}"
        )
    if not inspect.iscoroutinefunction(callback):
        raise TypeError(f"a timer callback must be an async method; {callback.__name__} is not")
    if isinstance(due, bool) or not isinstance(due, (int, float)) or not 0 <= due <= MAX_DUE:
        raise ValueError(
            f"timer due must be a number of seconds in [0, {MAX_DUE:.0f}], not {due!r}"
        )
    if period is not None and (
        isinstance(period, bool) or not isinstance(period, (int, float))
        or not MIN_PERIOD <= period <= MAX_DUE
    ):
        raise ValueError(
            f"timer period must be None (one tick) or seconds in [{MIN_PERIOD}, {MAX_DUE:.0f}], "
            f"not {period!r}"
        )
