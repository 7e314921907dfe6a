"""Stateless workers: up to ``max_local`` local activations per (type, key), on whichever silo
receives the call.

Why no directory and no ring owner: a stateless worker keeps no state, so nothing has to be
single; any silo may run it. Registering it would cost a store round trip per activation for
nothing, and forwarding it to the key's ring owner would pile a fan-out onto one silo. So a
worker call runs where it arrives: clients spread worker calls over the silos, and a grain's
call to a worker stays on the grain's silo.

The pool rule (Orleans' for stateless workers), per worker id (type, key) and per silo: a
call goes to an idle activation; if every activation is busy and fewer than ``max_local``
exist (starting ones included), a new one is activated for it; otherwise the call queues at
the activation with the shortest queue. Each activation is an ordinary
:class:`~grainery.silo.activation.Activation` and runs one call at a time, so at most
``max_local`` calls of one worker id run at once on a silo. The calls queued for one worker
id, over all its activations, are bounded by ``--max-queue-per-grain`` as one grain's are;
beyond that a call is refused as ``overloaded`` (RESOURCE_EXHAUSTED, retry-safe).

Lifecycle: the catalog counts worker activations with the others (status, metrics, idle
collection, drain, fencing); nothing is ever unregistered, since nothing was registered. A
worker holds no fencing token, but a silo that lost its lease starts no worker activation and
no turn (the activation's lease check), so a fenced silo refuses worker calls like any other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from grainery.client.errors import (
    GrainError,
    OverloadedError,
    SiloUnavailableError,
)
from grainery.client.grain_ref import GrainRef
from grainery.client.routing import GrainId
from grainery.client.tasks import spawn
from grainery.silo.activation import Activation, ActivationContext, Phase, _Deactivate
from grainery.silo.blocking import BlockingPool
from grainery.silo.call import CURRENT_CALL
from grainery.silo.cluster.view import MembershipView
from grainery.silo.failures import activation_failed
from grainery.silo.grain import NO_STORED_STATE, StatelessWorkerStateError, refuse_state
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry, GrainType
from grainery.silo.storage.protocols import GrainStorage
from grainery.silo.storage.redis_state import Fence

log = logging.getLogger("grainery.workers")


class StatelessContext(ActivationContext):
    """A worker activation's context: identity, grain references and deactivation requests
    as for any grain; every state operation raises :class:`StatelessWorkerStateError`."""

    __slots__ = ("grain_class",)

    def __init__(
        self, grain_id: GrainId, silo_id: str, storage: GrainStorage, incarnation: str,
        grain_ref_factory: Callable[[str, str], GrainRef], grain_class: type,
    ) -> None:
        # No fencing token: the fence names no activation, and nothing is written with it.
        super().__init__(grain_id, silo_id, storage, Fence(incarnation, ""), "",
                         grain_ref_factory)
        self.grain_class = grain_class

    async def write_state(self, state: dict[str, object]) -> None:
        raise StatelessWorkerStateError(self.grain_class)

    async def read_state(self) -> dict[str, object]:
        raise StatelessWorkerStateError(self.grain_class)

    async def clear_state(self) -> None:
        raise StatelessWorkerStateError(self.grain_class)

    def last_persisted(self) -> dict[str, object]:
        return NO_STORED_STATE


class _Starting:
    """An activation running on_activate: its task, and how many calls wait to queue at it
    besides the call that started it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[Activation]) -> None:
        self.task = task
        self.waiters = 0


class WorkerPool:
    """The activations of one worker id on this silo: ``active`` ones (ACTIVE, or
    DEACTIVATING until their last turn ends) and ``starting`` ones (running on_activate)."""

    __slots__ = ("active", "starting")

    def __init__(self) -> None:
        self.active: list[Activation] = []
        self.starting: dict[Activation, _Starting] = {}

    def __len__(self) -> int:
        return len(self.active) + len(self.starting)


class StatelessWorkers:
    """Every worker pool of one silo, by worker id."""

    def __init__(
        self,
        silo_id: str,
        membership: MembershipView,
        storage: GrainStorage,
        metrics: SiloMetrics,
        grain_ref_factory: Callable[[str, str], GrainRef],
        blocking: BlockingPool,
        max_queue: int,
        accepting: Callable[[], bool],
    ) -> None:
        self._silo_id = silo_id
        self._membership = membership
        self._serving: Callable[[], bool] = lambda: membership.serving
        self._storage = storage
        self._metrics = metrics
        self._grain_ref_factory = grain_ref_factory
        self._blocking = blocking
        self._max_queue = max_queue
        self._accepting = accepting
        self._pools: dict[GrainId, WorkerPool] = {}
        self._starting: set[Activation] = set()  # every pool's, including dropped pools'

    # ----- placement ------------------------------------------------------
    def idle(self, grain: GrainId) -> Activation | None:
        """An idle activation of this worker id, if there is one (no await: the hot path)."""
        pool = self._pools.get(grain)
        if pool is not None:
            for activation in pool.active:
                if activation.idle:
                    return activation
        return None

    async def place(self, grain: GrainId, grain_type: GrainType, deadline: float) -> Activation:
        """The activation this call should queue at (see the module docstring); raises
        asyncio.TimeoutError at ``deadline`` (loop time) while waiting for one to start."""
        limit = grain_type.stateless_max_local or 1
        loop = asyncio.get_running_loop()
        while True:
            if not self._membership.serving:
                raise SiloUnavailableError(
                    f"silo {self._silo_id} is not serving; {grain} was not run"
                )
            pool = self._pools.get(grain)
            if pool is None:
                pool = self._pools[grain] = WorkerPool()
            for activation in pool.active:
                if activation.idle:
                    return activation
            if len(pool) < limit and self._accepting():
                return await _wait(self._start(grain, grain_type, pool).task, deadline, loop)
            # Every activation is busy (or starting for the call that started it): queue at
            # the least loaded one. A starting activation's load is its starter's call plus
            # the calls waiting for it; they count as queued.
            best: Activation | _Starting | None = None
            least, queued = 0, 0
            for activation in pool.active:
                if activation.phase is Phase.ACTIVE:
                    queued += activation.queued
                    if best is None or activation.queued < least:
                        best, least = activation, activation.queued
            for starting in pool.starting.values():
                queued += starting.waiters
                if best is None or starting.waiters < least:
                    best, least = starting, starting.waiters
            if queued >= self._max_queue:
                raise OverloadedError(
                    f"stateless worker {grain} has {queued} calls queued over its "
                    f"{len(pool)} activation(s) on silo {self._silo_id} "
                    f"(limit {self._max_queue})"
                )
            if isinstance(best, Activation):
                return best
            if isinstance(best, _Starting):
                best.waiters += 1
                try:
                    return await _wait(best.task, deadline, loop)
                finally:
                    best.waiters -= 1
            # Nothing to queue at: the activations are deactivating, or none may start.
            leaving = [a for a in pool.active if a.phase is not Phase.GONE]
            if not leaving:
                self._forget_if_empty(grain, pool)
                raise SiloUnavailableError(
                    f"silo {self._silo_id} is not accepting activations; {grain} was not run"
                )
            gone = asyncio.ensure_future(leaving[0].wait_gone())
            try:
                done, _ = await asyncio.wait({gone}, timeout=max(0.0, deadline - loop.time()))
            finally:
                gone.cancel()
            if not done:
                raise asyncio.TimeoutError

    def _start(self, grain: GrainId, grain_type: GrainType, pool: WorkerPool) -> _Starting:
        activation = Activation(
            grain, grain_type, self._max_queue, self._deactivation_turn, self._serving,
            self._metrics,
        )
        # Its own task: on_activate is shared by every later call and outlives the deadline
        # of the call that started it.
        task = spawn(self._activate(activation, pool), name=f"grainery-worker {grain}",
                     expected=(GrainError,))
        starting = pool.starting[activation] = _Starting(task)
        self._starting.add(activation)
        return starting

    async def _activate(self, activation: Activation, pool: WorkerPool) -> Activation:
        CURRENT_CALL.set(None)  # this task's own context: on_activate is no caller's turn
        grain, grain_type = activation.grain_id, activation.grain_type
        incarnation = self._membership.incarnation
        try:
            refuse_state(grain_type.cls)
            instance = grain_type.cls()
            context = StatelessContext(
                grain, self._silo_id, self._storage, incarnation, self._grain_ref_factory,
                grain_type.cls,
            )
            instance._ctx = context
            instance._blocking = self._blocking
            instance._activation = activation
            activation.grain, activation.context = instance, context
            await instance.on_activate()
            if not self._membership.serving or self._membership.incarnation != incarnation:
                raise SiloUnavailableError(
                    f"silo {self._silo_id} fenced itself while {grain} was activating; not run"
                )
        except BaseException as exc:
            self._metrics.activation_failures.labels(grain_type.name).inc()
            activation.mark_gone()
            # Cancellation, SystemExit and KeyboardInterrupt propagate; only grain errors wrap.
            if not isinstance(exc, Exception) or isinstance(exc, SiloUnavailableError):
                raise
            raise activation_failed(grain_type.name, grain, exc) from None
        else:
            activation.phase = Phase.ACTIVE
            if self._pools.get(grain) is pool:  # not dropped by fencing meanwhile
                pool.active.append(activation)
                self._metrics.activations.labels(grain_type.name).inc()
                self._metrics.activations_created.labels(grain_type.name).inc()
            else:
                activation.abandon()
            return activation
        finally:
            pool.starting.pop(activation, None)
            self._starting.discard(activation)
            self._forget_if_empty(grain, pool)

    def _forget_if_empty(self, grain: GrainId, pool: WorkerPool) -> None:
        if not len(pool) and self._pools.get(grain) is pool:
            del self._pools[grain]

    # ----- deactivation ---------------------------------------------------
    async def _deactivation_turn(self, activation: Activation, request: _Deactivate) -> None:
        """An activation's last turn; unlike a grain's, it unregisters nothing."""
        grain, name = activation.grain_id, activation.grain_type.name
        try:
            if activation.grain is not None:
                await activation.grain.on_deactivate(request.reason)
        except Exception as exc:  # noqa: BLE001 - a failing hook must not keep the worker alive
            log.warning("on_deactivate of %s raised %s: %s", grain, type(exc).__name__, exc)
        pool = self._pools.get(grain)
        if pool is not None and activation in pool.active:
            pool.active.remove(activation)
            self._metrics.activations.labels(name).dec()
            self._forget_if_empty(grain, pool)
        self._metrics.deactivations.labels(name, request.reason).inc()
        activation.mark_gone()

    # ----- what the catalog sees ------------------------------------------
    def activations(self) -> Iterator[Activation]:
        """Every worker activation that has started (ACTIVE or DEACTIVATING)."""
        for pool in self._pools.values():
            yield from pool.active

    def count(self) -> int:
        return sum(len(pool.active) for pool in self._pools.values())

    def drop_all(self) -> None:
        """Fencing: forget every pool (the catalog has abandoned their activations); an
        activation still starting finds its pool gone and is abandoned as it finishes."""
        self._pools.clear()

    def quiescent(self) -> bool:
        """True once no worker activation is running on_activate."""
        return not self._starting


def worker_types(registry: GrainRegistry) -> frozenset[str]:
    """The stateless worker types of a registry (a silo's grain calls to them stay local)."""
    return frozenset(
        name for name in registry.names() if registry.get(name).stateless_max_local is not None
    )


def _queued(activation: Activation) -> int:
    return activation.queued


async def _wait(
    task: asyncio.Task[Activation], deadline: float, loop: asyncio.AbstractEventLoop
) -> Activation:
    """The task's result, or asyncio.TimeoutError at ``deadline``; the task is never
    cancelled by this wait (nor by the waiter's cancellation)."""
    done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
    if not done:
        raise asyncio.TimeoutError
    return task.result()
