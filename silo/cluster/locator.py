"""Where should a call run: on a local activation, or on another silo?

The hash ring suggests an owner; the Redis directory decides. Concurrent
first calls for one grain share a single resolution (one directory
round trip, one state load, one ``on_activate``), run in a task of its own so
that no caller's deadline can cancel an activation halfway.

Stateless workers skip all of that: the ring and the directory are never consulted, and
the call runs on this silo, in the worker pool of its (type, key) (silo/workers.py).

Where another silo hosts a grain is remembered (``remote``), so the next call this silo
forwards there (a stream delivery, a reminder tick, a gateway-only client's call) costs no
directory lookup. A remembered location is trusted only under the membership view it was
learnt in, and only while its silo is alive: any view change forgets them all (a join moves
grains to new owners), and a forward that fails forgets the grain. A stale one costs no
correctness: the silo it names resolves the call again (one more hop, bounded).
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

from grainery.client.errors import GrainError, SiloUnavailableError
from grainery.client.routing import GrainId
from grainery.client.tasks import spawn
from grainery.silo.activation import Activation, Phase
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.view import MembershipView
from grainery.silo.registry import GrainType
from grainery.silo.storage.protocols import GrainDirectory


@dataclass(frozen=True)
class Remote:
    """The grain lives (or should be activated) on another silo."""

    address: str
    silo_id: str


Placement = Activation | Remote

REMOTE_LOCATIONS = 100_000  # remembered locations of grains on other silos (LRU)


T = TypeVar("T")


async def wait_until(
    task: asyncio.Future[T], deadline: float, loop: asyncio.AbstractEventLoop
) -> T:
    """``shield`` plus a deadline without the extra task ``wait_for`` creates: waiting ends at
    the deadline (TimeoutError) or when the caller is cancelled; ``task`` is never cancelled."""
    if not task.done():
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        timer = loop.call_at(deadline, wake)
        try:
            await waiter
        finally:
            timer.cancel()
            task.remove_done_callback(wake)
        if not task.done():
            raise asyncio.TimeoutError
    return task.result()


class GrainLocator:
    def __init__(
        self, catalog: Catalog, directory: GrainDirectory, membership: MembershipView
    ) -> None:
        self._catalog = catalog
        self._directory = directory
        self._membership = membership
        self._pending: dict[GrainId, asyncio.Task[Placement]] = {}
        # grain -> (where, the incarnation hosting or owning it); valid for one view version.
        self._remote: OrderedDict[GrainId, tuple[Remote, str]] = OrderedDict()
        self._remote_version = -1

    def local(self, grain: GrainId) -> Activation | None:
        """The active local activation, if any (no await: the hot path); for a stateless
        worker, an idle one of its activations."""
        activation = self._catalog.get(grain)
        if activation is not None and activation.phase is Phase.ACTIVE:
            return activation
        return self._catalog.workers.idle(grain)

    def remote(self, grain: GrainId) -> Remote | None:
        """The remembered location of a grain on another silo (no await: the hot path), if it
        was learnt under the current membership view and its silo is alive."""
        if not self._remote:
            return None
        if self._remote_version != self._membership.snapshot.version:
            self._remote.clear()
            return None
        cached = self._remote.get(grain)
        if cached is None:
            return None
        remote, incarnation = cached
        if self._membership.is_alive(incarnation) is not True:
            del self._remote[grain]
            return None
        return remote

    def forget(self, grain: GrainId) -> None:
        """The remembered location failed (a forward to it did not go through)."""
        self._remote.pop(grain, None)

    def _learn(self, grain: GrainId, remote: Remote, incarnation: str) -> Remote:
        version = self._membership.snapshot.version
        if self._remote_version != version:
            self._remote.clear()
            self._remote_version = version
        self._remote[grain] = (remote, incarnation)
        self._remote.move_to_end(grain)
        if len(self._remote) > REMOTE_LOCATIONS:
            self._remote.popitem(last=False)
        return remote

    async def resolve(
        self, grain: GrainId, grain_type: GrainType, hops: int, deadline: float
    ) -> Placement:
        """Where the call should run; raises asyncio.TimeoutError at ``deadline`` (loop time).
        The caller's wait ends at its deadline; the shared resolution goes on regardless."""
        if grain_type.stateless_max_local is not None:
            return await self._catalog.workers.place(grain, grain_type, deadline)
        loop = asyncio.get_running_loop()
        while True:
            activation = self._catalog.get(grain)
            if activation is not None:
                if activation.phase is Phase.ACTIVE:
                    return activation
                await asyncio.wait_for(activation.wait_gone(), max(0.0, deadline - loop.time()))
                continue
            task = self._pending.get(grain)
            if task is None:
                task = spawn(
                    self._decide(grain, grain_type, hops), name=f"grainery-resolve {grain}",
                    expected=(GrainError,),
                )
                self._pending[grain] = task
                task.add_done_callback(functools.partial(self._finished, grain))
            return await wait_until(task, deadline, loop)

    def _finished(self, grain: GrainId, task: asyncio.Task[Placement]) -> None:
        if self._pending.get(grain) is task:
            del self._pending[grain]

    async def _decide(self, grain: GrainId, grain_type: GrainType, hops: int) -> Placement:
        membership = self._membership
        if not membership.serving:
            # A call that waited (for a deactivation, say) while the lease lapsed: a fenced
            # silo must not claim the grain in the directory or run its on_activate.
            raise SiloUnavailableError(
                f"silo {membership.silo_id} is not serving; {grain} was not activated"
            )
        owner = membership.ring.owner(grain)
        if owner is not None and owner.incarnation != membership.incarnation and hops == 0:
            entry = await self._directory.lookup(grain)
            if entry is None:
                return self._learn(grain, Remote(owner.address, owner.silo_id), owner.incarnation)
            if entry.incarnation != membership.incarnation:
                if await self._alive(entry.incarnation):
                    return self._learn(
                        grain, Remote(entry.address, entry.silo_id), entry.incarnation
                    )
                return self._learn(grain, Remote(owner.address, owner.silo_id), owner.incarnation)
            # The entry is a leftover of this very silo: take it back below.
        registration = await self._directory.register(
            grain, membership.incarnation, membership.silo_id, membership.address
        )
        if not registration.won:
            holder = registration.entry
            if await self._alive(holder.incarnation):
                return Remote(holder.address, holder.silo_id)
            registration = await self._directory.register(
                grain, membership.incarnation, membership.silo_id, membership.address,
                dead=holder.incarnation,
            )
            if not registration.won:
                return Remote(registration.entry.address, registration.entry.silo_id)
        return await self._catalog.activate(grain, grain_type, registration)

    async def _alive(self, incarnation: str) -> bool:
        alive = self._membership.is_alive(incarnation)
        if alive is None:
            await self._membership.refresh()
            alive = self._membership.is_alive(incarnation)
        return bool(alive)
