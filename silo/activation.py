"""One live grain instance and its turn-based mailbox.

Invariant: at most one turn (method call, or deactivation) runs at a time, and
turns run in arrival order. Calls wait in a bounded FIFO; a short-lived pump
task drains it, so an idle grain costs no task. A turn is never cancelled by its
caller: if the caller gives up (deadline, disconnect) while the call is still
queued, the call is skipped; once started, the turn runs to the end, so grain
code never stops halfway between changing and writing its state.

State after a failed turn (as in Dapr): a turn that raises, or in which a state
write failed, leaves ``self.state`` as last persisted. The activation keeps the
last persisted JSON bytes and decodes them again only on failure, so success
costs nothing extra. After a write whose outcome is unknown (the store did not
answer), the state is reloaded from the store before the next turn.
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
from grainery.silo.filters import incoming_call
from grainery.silo.storage.pool import NotSentError
from grainery.silo.storage.protocols import GrainStorage
from grainery.silo.storage.redis_state import Fence
from grainery.silo.storage.state_codec import EMPTY, decode_state, encode_state

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
    storage: GrainStorage
    fence: Fence
    etag: str
    grain_ref_factory: Callable[[str, str], GrainRef]
    deactivation_request: str | None = None  # reason, applied after the current turn
    persisted: bytes = EMPTY  # the state's JSON as last persisted (restored after a failure)
    write_failed: bool = False  # a write or clear of the current turn raised
    uncertain: bool = False  # a write may or may not have landed: reload before the next turn

    async def write_state(self, state: dict[str, Any]) -> None:
        try:
            payload = encode_state(state)  # refuses what JSON would not give back unchanged
        except (TypeError, ValueError):
            self.write_failed = True
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
            self.write_failed = True
            self.request_deactivation("conflict")
            raise
        except ActivationFencedError:
            self.write_failed = True
            self.request_deactivation("fenced")
            raise
        except StorageUnavailableError as exc:
            self.write_failed = True
            self.uncertain = not isinstance(exc.__cause__, NotSentError)
            raise
        except BaseException:
            self.write_failed = True
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
    call: GrainCall


@dataclass(eq=False)
class _Deactivate:
    reason: str
    unregister: bool


class Activation:
    __slots__ = (
        "_gone",
        "_loop",
        "_may_start",
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
        may_start: Callable[[], bool] = lambda: True,
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
        self._may_start = may_start  # the silo's lease is trusted (checked at turn start)

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

    def call(self, method: MethodSpec, call: GrainCall) -> asyncio.Future[Any]:
        """Queue a call; the returned future resolves with its result."""
        if self.phase is not Phase.ACTIVE:
            raise Redispatch()
        if self.queued >= self.max_queue:
            raise OverloadedError(
                f"{self.grain_id} has {self.queued} calls queued (limit {self.max_queue})"
            )
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue(_Call(future, method, call))
        return future

    def deactivate(self, reason: str, unregister: bool = True) -> None:
        """Start deactivating after the calls already queued; later calls are redispatched."""
        if self.phase is not Phase.ACTIVE:
            return
        self.phase = Phase.DEACTIVATING
        self._enqueue(_Deactivate(reason, unregister))

    def abandon(self) -> None:
        """Fencing: no further turn starts; the one running (if any) may finish. Queued
        calls fail as retry-safe UNAVAILABLE: they never ran, and a fenced silo cannot
        resolve them again."""
        for item in self._queue or ():
            if isinstance(item, _Call) and not item.future.done():
                item.future.set_exception(SiloUnavailableError(
                    f"silo fenced while {self.grain_id}.{item.method.name} was queued; not run"
                ))
        self._queue = None
        self.mark_gone()

    async def _drain(self) -> None:
        loop = self._loop
        # The pump inherited the context of the call that created it: no turn of this grain
        # may see that caller's call (and its deadline) as its own.
        CURRENT_CALL.set(None)
        while self._queue:
            item = self._queue.popleft()
            if not self._queue:
                self._queue = None  # an idle grain keeps no deque
            if isinstance(item, _Deactivate):
                await self._on_deactivate(self, item)
                continue
            if item.future.done():
                continue  # the caller gave up while queued: never run it
            if not self._may_start():  # fenced, perhaps before the loop heard of it
                item.future.set_exception(SiloUnavailableError(
                    f"silo fenced before {self.grain_id}.{item.method.name} could start; not run"
                ))
                continue
            if loop.time() > item.call.deadline:
                item.future.set_exception(DeadlineExceededError(
                    f"deadline passed while {self.grain_id}.{item.method.name} was queued; not run"
                ))
                continue
            await self._run_turn(item)

    async def _run_turn(self, call: _Call) -> None:
        assert self.grain is not None and self.context is not None
        self.running = True
        context, failed = self.context, True
        token = CURRENT_CALL.set(call.call)  # grain-to-grain calls inherit its deadline
        try:
            if context.uncertain:
                await self._reload_state(call)
            context.write_failed = False
            if self.grain._filters_calls:  # the grain's on_incoming_call, around the method
                result = await incoming_call(self.grain, call.call, partial(
                    call.method.func, self.grain, *call.call.args, **call.call.kwargs
                ))
            else:
                result = await call.method.func(self.grain, *call.call.args, **call.call.kwargs)
            failed = context.write_failed
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
            CURRENT_CALL.reset(token)
            if failed:
                self.grain.state = context.last_persisted()
            self.running = False
            self.last_active = time.monotonic()
        reason = context.deactivation_request
        if reason is not None:
            context.deactivation_request = None
            self.deactivate(reason, unregister=reason != "fenced")

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
