"""One live grain instance and its turn-based mailbox.

Invariant: at most one turn (method call, or deactivation) runs at a time, and
turns run in arrival order. Calls wait in a bounded FIFO; a short-lived pump
task drains it, so an idle grain costs no task. A turn is never cancelled by its
caller: if the caller gives up (deadline, disconnect) while the call is still
queued, the call is skipped; once started, the turn runs to the end, so grain
code never stops halfway between changing and writing its state.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grainery.client.errors import (
    ActivationFencedError,
    DeadlineExceededError,
    OverloadedError,
    StaleStateError,
)
from grainery.client.routing import GrainId
from grainery.client.tasks import spawn
from grainery.silo.storage import Fence, RedisGrainStorage

if TYPE_CHECKING:
    from grainery.client.grain_ref import GrainRef
    from grainery.silo.grain import Grain
    from grainery.silo.registry import GrainType, MethodSpec

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
    storage: RedisGrainStorage
    fence: Fence
    etag: str
    grain_ref_factory: Callable[[str, str], GrainRef]
    deactivation_request: str | None = None  # reason, applied after the current turn

    async def write_state(self, state: dict[str, Any]) -> None:
        self.etag = await self._compare_and_set(
            self.storage.write(self.grain_id, state, self.etag, self.fence)
        )

    async def read_state(self) -> dict[str, Any]:
        stored = await self.storage.read(self.grain_id)
        self.etag = stored.etag
        return stored.data

    async def clear_state(self) -> None:
        self.etag = await self._compare_and_set(
            self.storage.clear(self.grain_id, self.etag, self.fence)
        )

    async def _compare_and_set(self, write: Awaitable[str]) -> str:
        """A refused write leaves this activation's state stale: deactivate after the turn,
        so the next call reloads (conflict) or reaches the newer activation (fenced)."""
        try:
            return await write
        except StaleStateError:
            self.request_deactivation("conflict")
            raise
        except ActivationFencedError:
            self.request_deactivation("fenced")
            raise

    def get_grain(self, grain_type: str, key: str) -> GrainRef:
        return self.grain_ref_factory(grain_type, key)

    def request_deactivation(self, reason: str) -> None:
        if self.deactivation_request is None:
            self.deactivation_request = reason


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[Any]
    method: MethodSpec
    args: list[Any]
    deadline: float  # loop time


@dataclass(eq=False)
class _Deactivate:
    reason: str
    unregister: bool


class Activation:
    __slots__ = (
        "_gone",
        "_loop",
        "_on_deactivate",
        "_pump",
        "_queue",
        "context",
        "grain",
        "grain_id",
        "grain_type",
        "last_active",
        "max_queue",
        "phase",
        "running",
    )

    def __init__(
        self,
        grain_id: GrainId,
        grain_type: GrainType,
        max_queue: int,
        on_deactivate: Callable[[Activation, _Deactivate], Any],
    ) -> None:
        self._loop = asyncio.get_running_loop()  # cached: get_running_loop() costs a getpid()
        self.grain_id = grain_id
        self.grain_type = grain_type
        self.phase = Phase.ACTIVATING
        self.grain: Grain | None = None
        self.context: ActivationContext | None = None
        self.last_active = time.monotonic()
        self.max_queue = max_queue
        self.running = False
        self._gone: asyncio.Event | None = None
        self._queue: deque[_Call | _Deactivate] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._on_deactivate = on_deactivate

    async def wait_gone(self) -> None:
        """Wait until the activation has finished deactivating (or was abandoned)."""
        if self.phase is Phase.GONE:
            return
        if self._gone is None:
            self._gone = asyncio.Event()
        await self._gone.wait()

    def mark_gone(self) -> None:
        self.phase = Phase.GONE
        if self._gone is not None:
            self._gone.set()

    @property
    def idle(self) -> bool:
        return self.phase is Phase.ACTIVE and not self.running and not self._queue

    @property
    def queued(self) -> int:
        return len(self._queue) if self._queue else 0

    def _enqueue(self, item: _Call | _Deactivate) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        if self._pump is None or self._pump.done():
            self._pump = spawn(self._drain(), name=f"grain {self.grain_id}")

    def call(self, method: MethodSpec, args: list[Any], deadline: float) -> asyncio.Future[Any]:
        """Queue a call; the returned future resolves with its result."""
        if self.phase is not Phase.ACTIVE:
            raise Redispatch()
        if self.queued >= self.max_queue:
            raise OverloadedError(
                f"{self.grain_id} has {self.queued} calls queued (limit {self.max_queue})"
            )
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue(_Call(future, method, args, deadline))
        return future

    def deactivate(self, reason: str, unregister: bool = True) -> None:
        """Start deactivating after the calls already queued; later calls are redispatched."""
        if self.phase is not Phase.ACTIVE:
            return
        self.phase = Phase.DEACTIVATING
        self._enqueue(_Deactivate(reason, unregister))

    def abandon(self) -> None:
        """Fencing: no further turn starts; the one running (if any) may finish."""
        for item in self._queue or ():
            if isinstance(item, _Call) and not item.future.done():
                item.future.set_exception(Redispatch())
        self._queue = None
        self.mark_gone()

    async def _drain(self) -> None:
        loop = self._loop
        while self._queue:
            item = self._queue.popleft()
            if not self._queue:
                self._queue = None  # an idle grain keeps no deque
            if isinstance(item, _Deactivate):
                await self._on_deactivate(self, item)
                continue
            if item.future.done():
                continue  # the caller gave up while queued: never run it
            if loop.time() > item.deadline:
                item.future.set_exception(DeadlineExceededError(
                    f"deadline passed while {self.grain_id}.{item.method.name} was queued; not run"
                ))
                continue
            await self._run_turn(item)

    async def _run_turn(self, call: _Call) -> None:
        assert self.grain is not None and self.context is not None
        self.running = True
        try:
            result = await call.method.func(self.grain, *call.args)
        except asyncio.CancelledError:
            if not call.future.done():
                call.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - any grain failure goes to its caller
            if not call.future.done():
                call.future.set_exception(exc)
        else:
            if not call.future.done():
                call.future.set_result(result)
        finally:
            self.running = False
            self.last_active = time.monotonic()
        reason = self.context.deactivation_request
        if reason is not None:
            self.context.deactivation_request = None
            self.deactivate(reason, unregister=reason != "fenced")
