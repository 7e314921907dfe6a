"""Fencing inside one silo, in-process: the catalog and the mailbox against the membership
twin, plus the loop watchdog and the blocking pool. No Redis, no processes."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from typing import Any

import pytest

from grainery.client.errors import SiloUnavailableError
from grainery.client.routing import GrainId
from grainery.silo.activation import Activation
from grainery.silo.blocking import BlockingPool
from grainery.silo.call import GrainCall
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.directory import DirectoryEntry, Registration
from grainery.silo.cluster.memory import InMemoryCluster, InMemoryMembership
from grainery.silo.grain import Grain
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry, GrainType
from grainery.silo.storage.redis_state import Fence, StoredState
from grainery.silo.watchdog import LoopWatchdog, blocking_turn
from tests.eventually import until


class Probe(Grain):
    """on_activate and ``hold`` wait on per-test events; ``ran`` records what started."""

    activate_gate: asyncio.Event | None = None
    turn_gate: asyncio.Event | None = None
    ran: list[str] = []

    async def on_activate(self) -> None:
        Probe.ran.append("activate")
        if Probe.activate_gate is not None:
            await Probe.activate_gate.wait()

    async def hold(self) -> str:
        Probe.ran.append("hold")
        assert Probe.turn_gate is not None
        await Probe.turn_gate.wait()
        return "held"

    async def mark(self, i: int) -> int:
        Probe.ran.append(f"mark{i}")
        return i

    async def where(self) -> Any:
        return sys._getframe()


class Directory:
    def __init__(self) -> None:
        self.unregistered: list[GrainId] = []

    async def unregister(self, grain: GrainId, fence: Fence) -> bool:
        self.unregistered.append(grain)
        return True


class Silo:
    def __init__(self) -> None:
        self.cluster = InMemoryCluster()
        self.membership: InMemoryMembership = self.cluster.join("a")
        self.directory = Directory()
        self.blocking = BlockingPool(2)
        self.catalog = Catalog(
            "a", self.membership, None, self.directory, SiloMetrics(),  # type: ignore[arg-type]
            lambda t, k: None, 60.0, 100, self.blocking,  # type: ignore[arg-type,return-value]
        )
        registry = GrainRegistry()
        self.grain_type: GrainType = registry.register(Probe)

    def registration(self, key: str) -> Registration:
        entry = DirectoryEntry(self.membership.incarnation, "a", "a:7070", "1")
        return Registration(True, entry, StoredState({}, ""))

    def call(self, activation: Activation, method: str, *args: Any) -> asyncio.Future[Any]:
        deadline = asyncio.get_running_loop().time() + 60
        call = GrainCall("Probe", activation.grain_id.key, method, list(args), deadline=deadline)
        return activation.call(self.grain_type.method(method), call)

    def activate(self, key: str) -> asyncio.Task[Any]:
        grain = GrainId("Probe", key)
        return asyncio.ensure_future(
            self.catalog.activate(grain, self.grain_type, self.registration(key)))


@pytest.fixture
def silo() -> Silo:
    Probe.activate_gate, Probe.turn_gate, Probe.ran = None, None, []
    return Silo()




async def test_an_activation_enters_the_table_when_the_silo_still_serves(silo: Silo) -> None:
    activation = await silo.activate("k")
    assert silo.catalog.get(GrainId("Probe", "k")) is activation


async def test_a_silo_fenced_during_on_activate_keeps_no_copy(silo: Silo) -> None:
    Probe.activate_gate = asyncio.Event()
    task = silo.activate("k")
    await until(lambda: Probe.ran == ["activate"])
    silo.membership.fence()
    silo.catalog.abandon_all()
    assert not silo.catalog.quiescent()  # a rejoin waits for the on_activate still running
    Probe.activate_gate.set()
    with pytest.raises(SiloUnavailableError):
        await task
    assert len(silo.catalog) == 0 and silo.catalog.quiescent()
    assert silo.directory.unregistered == []  # a fenced silo leaves the directory alone


async def test_a_silo_that_fenced_and_rejoined_during_on_activate_keeps_no_copy(
    silo: Silo,
) -> None:
    Probe.activate_gate = asyncio.Event()
    task = silo.activate("k")
    await until(lambda: Probe.ran == ["activate"])
    silo.membership.fence()
    silo.catalog.abandon_all()
    silo.membership.rejoin()  # serving again, as a new incarnation
    Probe.activate_gate.set()
    with pytest.raises(SiloUnavailableError):
        await task
    assert len(silo.catalog) == 0


async def test_queued_calls_do_not_start_once_the_silo_is_not_serving(silo: Silo) -> None:
    """The fence has not reached the catalog yet (no abandon_all): the mailbox's own check
    at turn start is what keeps the queue from running."""
    activation = await silo.activate("k")
    Probe.turn_gate = asyncio.Event()
    hold = silo.call(activation, "hold")
    marks = [silo.call(activation, "mark", i) for i in range(3)]
    await until(lambda: Probe.ran == ["activate", "hold"])
    silo.membership.fence()
    Probe.turn_gate.set()
    assert await hold == "held"  # the running turn finishes
    for mark in marks:
        with pytest.raises(SiloUnavailableError):
            await mark
    assert Probe.ran == ["activate", "hold"]


async def test_fencing_fails_queued_calls_as_unavailable(silo: Silo) -> None:
    activation = await silo.activate("k")
    Probe.turn_gate = asyncio.Event()
    hold = silo.call(activation, "hold")
    mark = silo.call(activation, "mark", 0)
    await until(lambda: Probe.ran == ["activate", "hold"])
    silo.membership.fence()
    silo.catalog.abandon_all()
    with pytest.raises(SiloUnavailableError):  # retry-safe: it never ran
        await mark
    Probe.turn_gate.set()
    assert await hold == "held"
    assert Probe.ran == ["activate", "hold"]


async def test_the_watchdog_names_the_grain_and_method(
    silo: Silo, caplog: pytest.LogCaptureFixture
) -> None:
    activation = await silo.activate("k")
    frame = await activation.grain.where()  # type: ignore[union-attr]
    assert blocking_turn(frame).startswith("Probe/k.where ")
    watchdog = LoopWatchdog(threshold=0.1)
    watchdog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="grainery.watchdog"):
            class Sleeper(Grain):
                async def nap(self) -> None:
                    time.sleep(0.5)  # noqa: ASYNC251 - the blocking under test

            sleeper = Sleeper()
            sleeper._ctx = activation.context  # type: ignore[assignment]
            await sleeper.nap()
            await until(lambda: "unblocked" in caplog.text)
    finally:
        watchdog.stop()
    assert "Sleeper/k.nap" in caplog.text, caplog.text  # the grain (its key) and the method


async def test_run_blocking_uses_a_bounded_pool(silo: Silo) -> None:
    activation = await silo.activate("k")
    grain = activation.grain
    assert grain is not None
    release = threading.Event()
    running: list[int] = []
    peak = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal peak
        with lock:
            running.append(i)
            peak = max(peak, len(running))
        release.wait(10)
        with lock:
            running.remove(i)
        return i

    calls = [asyncio.ensure_future(grain.run_blocking(work, i)) for i in range(6)]
    # Two run; the other four wait in the pool's queue, not on threads of their own.
    await until(lambda: len(running) == 2 and silo.blocking._executor._work_queue.qsize() == 4)
    release.set()
    assert await asyncio.gather(*calls) == list(range(6))
    assert peak == 2  # the pool's size (2 here), never more
