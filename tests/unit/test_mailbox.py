"""The mailbox, in process: which turns of one activation may run together, and what the state
rules mean when they do. Real catalog and activations over the in-memory twins; each grain
method waits on a named gate the test opens, so every overlap (or its absence) is a state the
test can see, not a timing. The same rules through real silos: tests/integration/
test_reentrancy.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from grainery import interleave, read_only
from grainery.client.errors import (
    DeadlineExceededError,
    OverloadedError,
    SiloUnavailableError,
    StorageUnavailableError,
)
from grainery.client.routing import GrainId
from grainery.silo.activation import Activation, Phase
from grainery.silo.blocking import BlockingPool
from grainery.silo.call import GrainCall
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.memory import InMemoryCluster, InMemoryMembership
from grainery.silo.grain import Grain
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry
from grainery.silo.storage.memory import MemoryGrainDirectory, MemoryGrainStorage, MemoryStore
from grainery.silo.storage.redis_state import Fence
from tests.eventually import until

LOG: list[str] = []  # "start NAME" / "end NAME" as grain code runs
GATES: dict[str, asyncio.Event] = {}


OPEN = "*"  # present once gate_all() opened every gate


def gate(name: str) -> asyncio.Event:
    return GATES.get(OPEN) or GATES.setdefault(name, asyncio.Event())


async def held(name: str) -> str:
    LOG.append(f"start {name}")
    await gate(name).wait()
    LOG.append(f"end {name}")
    return name


class Plain(Grain):
    async def hold(self, name: str) -> str:
        return await held(name)

    @interleave
    async def hold_interleaved(self, name: str) -> str:
        return await held(name)

    @read_only
    async def read(self, name: str) -> str:
        return await held(name)

    async def on_deactivate(self, reason: str) -> None:
        LOG.append(f"deactivate {reason}")


class Reentrant(Plain):
    reentrant = True

    async def write(self, name: str, field: str) -> None:
        """Change the state, then write it (the write may be held by the storage gate)."""
        self.state[field] = 1
        LOG.append(f"start {name}")
        await self.write_state()
        LOG.append(f"end {name}")

    async def write_and_wait(self, name: str, field: str) -> str:
        """Change the state and write it; if the store does not answer, carry on."""
        self.state[field] = 1
        try:
            await self.write_state()
        except StorageUnavailableError:
            LOG.append(f"caught {name}")
        return await held(name)

    async def fail(self, field: str) -> None:
        self.state[field] = 1
        raise RuntimeError(f"{field} failed")

    async def fields(self) -> list[str]:
        return sorted(self.state)


class ChainOk(Plain):
    allow_call_chain_reentrancy = True


class GatedStorage(MemoryGrainStorage):
    """Holds every write until ``writes`` is set (when a test sets ``hold``); with
    ``unanswered``, applies the next write and then fails it as the store going away would."""

    hold = False
    unanswered = False
    writes: asyncio.Event

    async def write(self, grain: GrainId, payload: bytes, etag: str, fence: Fence) -> str:
        if self.hold:
            await self.writes.wait()
        etag = await super().write(grain, payload, etag, fence)
        if self.unanswered:
            self.unanswered = False
            raise StorageUnavailableError("store gone (the write may have been applied)")
        return etag


@dataclass
class Grains:
    catalog: Catalog
    storage: GatedStorage
    directory: MemoryGrainDirectory
    membership: InMemoryMembership
    registry: GrainRegistry

    async def activate(self, grain_type: str, key: str = "k") -> Activation:
        grain = GrainId(grain_type, key)
        registration = await self.directory.register(
            grain, self.membership.incarnation, "s1", self.membership.address
        )
        return await self.catalog.activate(grain, self.registry.get(grain_type), registration)


Build = Callable[..., Grains]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    LOG.clear()
    GATES.clear()
    pools: list[BlockingPool] = []

    def make(max_queue: int = 100) -> Grains:
        memory = MemoryStore()
        storage, directory = GatedStorage(memory), MemoryGrainDirectory(memory)
        storage.writes = asyncio.Event()
        registry = GrainRegistry()
        for cls in (Plain, Reentrant, ChainOk):
            registry.register(cls)
        membership = InMemoryCluster().join("s1")
        pools.append(BlockingPool(1))
        catalog = Catalog("s1", membership, storage, directory, SiloMetrics(),
                          lambda t, k: None, 60.0, max_queue,  # type: ignore[arg-type, return-value]
                          pools[-1])
        return Grains(catalog, storage, directory, membership, registry)

    yield make
    for pool in pools:
        pool.close()


def call(activation: Activation, method: str, *args: Any, chain: tuple[str, ...] = (),
         timeout: float = 5.0) -> asyncio.Future[Any]:
    grain = activation.grain_id
    deadline = asyncio.get_running_loop().time() + timeout
    spec = activation.grain_type.method(method)
    return activation.call(spec, GrainCall(grain.grain_type, grain.key, method, list(args),
                                           deadline=deadline, chain=chain))




async def gate_all(calls: list[asyncio.Future[Any]]) -> None:
    """Open every gate, present and future, and wait for ``calls``."""
    GATES[OPEN] = asyncio.Event()
    for event in GATES.values():
        event.set()
    await asyncio.gather(*calls)


async def started(*names: str) -> None:
    await until(lambda: all(f"start {n}" in LOG for n in names), f"{names} started")


# ----- who may run together -------------------------------------------------------
async def test_a_plain_grain_queues_calls_while_a_turn_waits(build: Build) -> None:
    activation = await build().activate("Plain")
    first = call(activation, "hold", "a")
    await started("a")
    second = call(activation, "hold", "b")
    await until(lambda: activation.queued == 1, "the second call queued")
    assert activation.turns == 1 and "start b" not in LOG
    gate("a").set()
    gate("b").set()
    assert await first == "a" and await second == "b"
    assert LOG == ["start a", "end a", "start b", "end b"]


async def test_a_reentrant_grain_starts_calls_while_turns_wait(build: Build) -> None:
    activation = await build().activate("Reentrant")
    calls = [call(activation, "hold", name) for name in "abc"]
    await started("a", "b", "c")
    assert activation.turns == 3 and activation.queued == 0
    assert activation.running and not activation.idle
    for name in "cba":
        gate(name).set()
    assert await asyncio.gather(*calls) == ["a", "b", "c"]
    assert LOG[3:] == ["end c", "end b", "end a"]
    assert activation.turns == 0 and activation.idle


async def test_an_interleave_method_runs_beside_a_writer_and_never_holds_the_grain(
    build: Build,
) -> None:
    activation = await build().activate("Plain")
    writer = call(activation, "hold", "w1")
    await started("w1")
    interleaved = call(activation, "hold_interleaved", "i")
    await started("i")  # beside the waiting writer
    gate("w1").set()
    assert await writer == "w1"
    second_writer = call(activation, "hold", "w2")
    await started("w2")  # the interleaved turn still waits; it holds nothing
    assert "end i" not in LOG
    gate("w2").set()
    gate("i").set()
    assert await second_writer == "w2" and await interleaved == "i"


async def test_read_only_calls_overlap_each_other_and_never_a_writer(build: Build) -> None:
    activation = await build().activate("Plain")
    readers = [call(activation, "read", name) for name in ("r1", "r2")]
    await started("r1", "r2")
    writer = call(activation, "hold", "w")
    await until(lambda: activation.queued == 1, "the writer queued behind the readers")
    # A writer waits: a reader that comes later waits behind it (FIFO), so readers
    # arriving all the time cannot starve the writer.
    late_reader = call(activation, "read", "r3")
    await until(lambda: activation.queued == 2, "the late reader queued behind the writer")
    gate("r1").set()
    await until(lambda: "end r1" in LOG, "r1 ended")
    assert "start w" not in LOG  # r2 still runs
    gate("r2").set()
    await started("w")
    assert "start r3" not in LOG and activation.turns == 1
    gate("w").set()
    gate("r3").set()
    assert await asyncio.gather(*readers, writer, late_reader) == ["r1", "r2", "w", "r3"]
    assert LOG.index("end w") < LOG.index("start r3")


async def test_a_call_back_through_its_own_chain_passes_the_queue_when_allowed(
    build: Build,
) -> None:
    grains = build()
    allowed, plain = await grains.activate("ChainOk"), await grains.activate("Plain")
    calls = []
    for activation, prefix in ((allowed, "allowed"), (plain, "plain")):
        calls.append(call(activation, "hold", f"{prefix}-running"))
        await started(f"{prefix}-running")
        calls.append(call(activation, "hold", f"{prefix}-queued"))
        await until(lambda a=activation: a.queued == 1, "a call queued")  # type: ignore[misc]
        chain = ("Caller/x", str(activation.grain_id), "Other/y")
        calls.append(call(activation, "hold", f"{prefix}-back", chain=chain))
    await started("allowed-back")  # past the queued call, beside the waiting turn
    assert allowed.queued == 1 and allowed.turns == 2
    assert plain.queued == 2 and "start plain-back" not in LOG  # waits its turn (the
    # dispatcher refuses such a call as a deadlock before it gets here)
    await gate_all(calls)


async def test_a_chain_naming_a_grain_with_no_running_turn_is_an_ordinary_call(
    build: Build,
) -> None:
    activation = await build().activate("ChainOk")
    first = call(activation, "hold", "first", chain=(str(activation.grain_id),))
    await started("first")
    second = call(activation, "hold", "second")
    await until(lambda: activation.queued == 1, "the second call queued behind the first")
    await gate_all([first, second])


# ----- the turn-start checks --------------------------------------------------------
async def test_interleaved_calls_whose_deadline_passed_are_not_run(build: Build) -> None:
    activation = await build().activate("Plain")
    call(activation, "hold", "w")
    await started("w")
    queued_reader = call(activation, "read", "late", timeout=-1)
    interleaved = call(activation, "hold_interleaved", "now", timeout=-1)
    with pytest.raises(DeadlineExceededError):
        await interleaved
    gate("w").set()
    with pytest.raises(DeadlineExceededError):
        await queued_reader
    assert "start late" not in LOG and "start now" not in LOG


async def test_a_fenced_silo_starts_no_interleaved_turn(build: Build) -> None:
    grains = build()
    activation = await grains.activate("Reentrant")
    running = call(activation, "hold", "before")
    await started("before")
    grains.membership.fence()
    with pytest.raises(SiloUnavailableError) as refused:
        await call(activation, "hold", "after")
    assert refused.value.retry_safe and "start after" not in LOG
    gate("before").set()
    assert await running == "before"  # a turn that started runs to its end


async def test_interleaved_turns_count_against_the_queue_bound(build: Build) -> None:
    activation = await build(max_queue=2).activate("Reentrant")
    calls = [call(activation, "hold", name) for name in "abc"]
    await started("a", "b", "c")
    with pytest.raises(OverloadedError):
        call(activation, "hold", "d")
    for name in "abc":
        gate(name).set()
    await asyncio.gather(*calls)


# ----- deactivation and fencing wait for every turn -------------------------------------
async def test_deactivation_runs_after_every_interleaved_turn(build: Build) -> None:
    activation = await build().activate("Reentrant")
    calls = [call(activation, "hold", name) for name in "ab"]
    await started("a", "b")
    activation.deactivate("test")
    gate("a").set()
    await until(lambda: "end a" in LOG, "a ended")
    assert activation.phase is Phase.DEACTIVATING and "deactivate test" not in LOG
    gate("b").set()
    await asyncio.wait_for(activation.wait_gone(), 5)
    assert LOG[-1] == "deactivate test" and await asyncio.gather(*calls) == ["a", "b"]


async def test_a_fenced_silo_is_quiescent_only_after_every_interleaved_turn(
    build: Build,
) -> None:
    grains = build()
    activation = await grains.activate("Reentrant")
    calls = [call(activation, "hold", name) for name in "ab"]
    await started("a", "b")
    grains.catalog.abandon_all()
    gate("a").set()
    await until(lambda: "end a" in LOG, "a ended")
    assert not grains.catalog.quiescent()  # b still runs
    gate("b").set()
    await asyncio.gather(*calls)
    assert grains.catalog.quiescent()


# ----- the state rules when turns interleave -------------------------------------------
async def test_a_failed_turn_does_not_undo_a_write_still_in_flight(build: Build) -> None:
    """B's write is in the store's hands when A fails. Restoring at once would put back the
    state without B's change; B's write then lands, and the next write would silently undo
    it. The restore waits until no turn runs, and then includes B's write."""
    grains = build()
    activation = await grains.activate("Reentrant")
    grains.storage.hold = True
    writing = call(activation, "write", "b", "b")
    await started("b")
    with pytest.raises(RuntimeError, match="a failed"):
        await call(activation, "fail", "a")
    grains.storage.writes.set()
    await writing
    assert await call(activation, "fields") == ["b"]  # a's change rolled back, b's kept
    await call(activation, "write", "c", "c")
    assert (await grains.storage.read(activation.grain_id)).data == {"b": 1, "c": 1}


async def test_a_failure_beside_running_turns_holds_new_turns_until_restored(
    build: Build,
) -> None:
    activation = await build().activate("Reentrant")
    running = call(activation, "hold", "a")
    await started("a")
    with pytest.raises(RuntimeError):
        await call(activation, "fail", "x")
    later = call(activation, "fields")
    await until(lambda: activation.queued == 1, "the next call waits for the restore")
    assert not later.done()
    gate("a").set()
    assert await running == "a"
    assert await later == []  # restored (x rolled back) before it started


async def test_a_lone_failed_turn_restores_at_once(build: Build) -> None:
    activation = await build().activate("Reentrant")
    with pytest.raises(RuntimeError):
        await call(activation, "fail", "x")
    assert activation.grain is not None and activation.grain.state == {}


async def test_the_reload_after_an_unanswered_write_waits_for_the_running_turns(
    build: Build,
) -> None:
    """The writing turn catches the store's error and goes on waiting: until it ends, no
    new turn starts on a state that may or may not be the stored one."""
    grains = build()
    activation = await grains.activate("Reentrant")
    grains.storage.unanswered = True
    writing = call(activation, "write_and_wait", "w", "w")
    await until(lambda: "caught w" in LOG, "the write failed")
    later = call(activation, "fields")
    await until(lambda: activation.queued == 1, "the next call waits for the reload")
    gate("w").set()
    assert await writing == "w"
    assert await later == ["w"]  # reloaded: the write had landed
