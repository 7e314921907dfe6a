"""The activations table of one silo: create, find, deactivate, collect idle grains.

Invariant: the table holds at most one activation per grain, and a grain's
entry leaves the table only after its deactivation turn has finished
(``on_deactivate`` ran and the directory entry was removed), so a new
activation of the same grain can never overlap the old one on this silo.
An activation enters the table only if, after its ``on_activate``, the silo is
still serving as the incarnation that registered it: a silo that fenced itself
meanwhile (and dropped its table) must not end up with a live copy.

Stateless workers (several local activations per grain, no directory entry) live in
:attr:`Catalog.workers` (silo/workers.py), not in the table; the catalog counts, collects,
drains and abandons them with the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

from grainery.client.errors import SiloUnavailableError
from grainery.client.grain_ref import GrainRef
from grainery.client.routing import GrainId
from grainery.silo.activation import Activation, ActivationContext, Phase, _Deactivate
from grainery.silo.blocking import BlockingPool
from grainery.silo.cluster.directory import Registration
from grainery.silo.cluster.view import MembershipView
from grainery.silo.durable.runtime import resume_on_activation
from grainery.silo.failures import activation_failed
from grainery.silo.journal.store import RedisJournalStore
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainType
from grainery.silo.storage.protocols import GrainDirectory, GrainStorage
from grainery.silo.storage.redis_state import Fence
from grainery.silo.tracing import traced_grain_op
from grainery.silo.workers import StatelessWorkers

if TYPE_CHECKING:
    from grainery.silo.reminders.registry import Reminders

log = logging.getLogger("grainery.catalog")


class _FencedWhileActivating(Exception):
    """on_activate finished on a silo that is no longer serving as the registering incarnation."""


class Catalog:
    def __init__(
        self,
        silo_id: str,
        membership: MembershipView,
        storage: GrainStorage,
        directory: GrainDirectory,
        metrics: SiloMetrics,
        grain_ref_factory: Callable[[str, str], GrainRef],
        default_idle_timeout: float,
        max_queue_per_grain: int,
        blocking: BlockingPool,
        journal_store: RedisJournalStore | None = None,
    ) -> None:
        self.silo_id = silo_id
        self._journal_store = journal_store
        self._membership = membership
        self._serving: Callable[[], bool] = lambda: membership.serving  # one for all
        self._blocking = blocking
        self._storage = storage
        self._directory = directory
        self._metrics = metrics
        self._grain_ref_factory = grain_ref_factory
        self.default_idle_timeout = default_idle_timeout
        self.max_queue_per_grain = max_queue_per_grain
        self._table: dict[GrainId, Activation] = {}
        self._abandoned: list[Activation] = []
        self._activating: set[Activation] = set()  # running on_activate
        self._metric_children: dict[str, tuple[Any, Any]] = {}
        self.accepting = True
        self.reminders: Reminders | None = None  # set by the silo (silo/reminders/registry.py)
        self.workers = StatelessWorkers(
            silo_id, membership, storage, metrics, grain_ref_factory, blocking,
            max_queue_per_grain, lambda: self.accepting,
        )

    def __len__(self) -> int:
        return len(self._table) + self.workers.count()

    def get(self, grain: GrainId) -> Activation | None:
        return self._table.get(grain)

    def counts_by_type(self) -> dict[str, int]:
        return dict(Counter(a.grain_type.name for a in self._everything()))

    def activations(self) -> Iterator[Activation]:
        """Every started activation (for reports: the dashboard's top grains)."""
        return self._everything()

    def _everything(self) -> Iterator[Activation]:
        """Every started activation: the table's and the stateless workers'."""
        return chain(self._table.values(), self.workers.activations())

    # ----- activation -----------------------------------------------------
    @traced_grain_op("grainery.activate", "internal", store=False)
    async def activate(
        self, grain: GrainId, grain_type: GrainType, registration: Registration
    ) -> Activation:
        """Build the grain from its registration (state already loaded) and run on_activate."""
        assert registration.state is not None
        membership = self._membership
        activation = Activation(
            grain, grain_type, self.max_queue_per_grain, self._deactivation_turn,
            self._serving, self._metrics,
        )
        fence = registration.fence
        self._activating.add(activation)
        activation.turns += 1  # a rejoin waits for on_activate as for a running turn
        try:
            if not self.accepting:
                raise SiloUnavailableError(f"silo {self.silo_id} is not accepting activations")
            instance = grain_type.cls()
            context = ActivationContext(
                grain, self.silo_id, self._storage, fence, registration.state.etag,
                self._grain_ref_factory, self._journal_store, persisted=registration.state.raw,
                reminders=self.reminders,
            )
            instance._ctx = context
            instance._blocking = self._blocking
            instance._activation = activation
            instance.state = registration.state.data
            activation.grain, activation.context = instance, context
            await instance.on_activate()
            if not membership.serving or membership.incarnation != fence.incarnation:
                raise _FencedWhileActivating(
                    f"silo {self.silo_id} fenced itself while {grain} was activating; not run"
                )
        except _FencedWhileActivating as exc:
            # No unregister: a fenced silo may not touch the directory (a newer owner may
            # hold the entry); the entry names a dead incarnation and is taken over.
            self._metrics.activation_failures.labels(grain_type.name).inc()
            activation.mark_gone()
            raise SiloUnavailableError(str(exc)) from None
        except BaseException as exc:
            self._metrics.activation_failures.labels(grain_type.name).inc()
            await self._unregister_quietly(grain, fence)
            activation.mark_gone()
            # Cancellation, SystemExit and KeyboardInterrupt propagate; only grain errors wrap.
            if not isinstance(exc, Exception) or isinstance(exc, SiloUnavailableError):
                raise
            raise activation_failed(grain_type.name, grain, exc) from None
        finally:
            activation.turns -= 1
            self._activating.discard(activation)
        activation.phase = Phase.ACTIVE
        self._table[grain] = activation
        resume_on_activation(activation)  # an unfinished durable run goes on, with no caller
        active, created = self._type_metrics(grain_type.name)
        active.inc()
        created.inc()
        return activation

    def _type_metrics(self, name: str) -> tuple[Any, Any]:
        children = self._metric_children.get(name)
        if children is None:
            children = self._metric_children[name] = (
                self._metrics.activations.labels(name),
                self._metrics.activations_created.labels(name),
            )
        return children

    async def _unregister_quietly(self, grain: GrainId, fence: Fence) -> None:
        try:
            await self._directory.unregister(grain, fence)
        except Exception as exc:  # noqa: BLE001 - the entry stays; a later activation takes it over
            log.warning("could not unregister %s: %s", grain, type(exc).__name__)

    # ----- deactivation ---------------------------------------------------
    async def _deactivation_turn(self, activation: Activation, request: _Deactivate) -> None:
        """Runs as the activation's last turn."""
        grain, name = activation.grain_id, activation.grain_type.name
        try:
            if activation.grain is not None:
                await activation.grain.on_deactivate(request.reason)
        except Exception as exc:  # noqa: BLE001 - a failing hook must not keep the grain alive
            log.warning("on_deactivate of %s raised %s: %s", grain, type(exc).__name__, exc)
        if request.unregister and activation.context is not None:
            await self._unregister_quietly(grain, activation.context.fence)
        if self._table.get(grain) is activation:
            del self._table[grain]
            self._metrics.activations.labels(name).dec()
        self._metrics.deactivations.labels(name, request.reason).inc()
        activation.mark_gone()

    def collect_idle(self) -> int:
        """Deactivate grains idle for longer than their type's timeout."""
        now = time.monotonic()
        collected = 0
        for activation in list(self._everything()):
            timeout = activation.grain_type.idle_timeout or self.default_idle_timeout
            if activation.idle and now - activation.last_active >= timeout:
                activation.deactivate("idle")
                collected += 1
        return collected

    async def run_idle_collector(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.collect_idle()

    def deactivate_idle(self, reason: str) -> int:
        """Deactivate every grain that is not running or queueing a call right now
        (a draining silo hands its idle grains over at once)."""
        idle = [a for a in self._everything() if a.idle]
        for activation in idle:
            activation.deactivate(reason)
        return len(idle)

    async def deactivate_all(self, reason: str, timeout: float) -> None:
        """Deactivate everything (after calls already queued) and wait, bounded."""
        activations = list(self._everything())
        for activation in activations:
            activation.deactivate(reason)
        waits = [asyncio.ensure_future(a.wait_gone()) for a in activations]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d grains did not finish deactivating in %.0fs", len(pending), timeout)

    async def deactivate_matching(
        self, should_move: Callable[[GrainId], bool], reason: str, per_second: int
    ) -> int:
        """Deactivate, at a bounded rate, the grains ``should_move`` selects (rebalancing)."""
        moved = 0
        for activation in list(self._table.values()):
            if activation.phase is Phase.ACTIVE and should_move(activation.grain_id):
                activation.deactivate(reason)
                moved += 1
                if moved % max(1, per_second // 10) == 0:
                    await asyncio.sleep(0.1)
        return moved

    def abandon_all(self) -> None:
        """Fencing: drop every activation at once without touching Redis."""
        for activation in self._everything():
            self._metrics.activations.labels(activation.grain_type.name).dec()
            self._metrics.deactivations.labels(activation.grain_type.name, "fenced").inc()
            activation.abandon()
            if activation.running:
                self._abandoned.append(activation)
        self._table.clear()
        self.workers.drop_all()
        self._abandoned.extend(self._activating)  # they re-check after on_activate

    def quiescent(self) -> bool:
        """True once no abandoned activation is still running a turn (interleaved turns
        included: ``running`` counts them all)."""
        self._abandoned = [a for a in self._abandoned if a.running]
        return not self._abandoned and self.workers.quiescent()
