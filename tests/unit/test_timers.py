"""Grain timers, in process: real catalog and activations over the in-memory twins. Each tick
appends to a log; "it stopped" is proved against a witness timer that keeps ticking (so no
test sleeps or reads a clock). Through real silos: tests/integration/test_timers.py."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from grainery.client.routing import GrainId
from grainery.silo.activation import Activation, Phase
from grainery.silo.blocking import BlockingPool
from grainery.silo.call import GrainCall, current_call
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.memory import InMemoryCluster, InMemoryMembership
from grainery.silo.decorators import stateless_worker
from grainery.silo.grain import Grain
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry
from grainery.silo.storage.memory import MemoryGrainDirectory, MemoryGrainStorage, MemoryStore
from grainery.silo.timers import MAX_TIMERS, MIN_PERIOD, GrainTimer
from tests.eventually import until
from tests.inprocess import InProcessCluster

LOG: list[str] = []
GATE: dict[str, asyncio.Event] = {}
SEEN: list[tuple[str, dict[str, str], tuple[str, ...], float | None]] = []


class Ticker(Grain):
    idle_timeout = 60.0

    async def tick(self) -> None:
        LOG.append(f"tick {self.key}")

    async def witness(self) -> None:
        LOG.append(f"witness {self.key}")

    async def slow(self) -> None:
        LOG.append(f"slow start {self.key}")
        await GATE["slow"].wait()
        LOG.append(f"slow end {self.key}")

    async def boom(self) -> None:
        LOG.append(f"boom {self.key}")
        raise RuntimeError("timer boom")

    async def context(self) -> None:
        call, ctx = current_call(), self.call_context
        assert call is not None
        SEEN.append((call.method, dict(ctx.values), ctx.chain, ctx.deadline))

    async def hold(self) -> None:
        LOG.append(f"hold start {self.key}")
        await GATE["hold"].wait()
        LOG.append(f"hold end {self.key}")

    async def on_deactivate(self, reason: str) -> None:
        LOG.append(f"deactivate {self.key}")

    def sync_method(self) -> None:
        """Not async: refused as a timer callback."""


class SelfCancel(Ticker):
    handle: GrainTimer | None = None
    count = 0

    async def tick(self) -> None:
        self.count += 1
        LOG.append(f"tick {self.key}")
        if self.count == 2 and self.handle is not None:
            self.handle.cancel()


class StartsItself(Ticker):
    """Registers a one-shot timer, due at once, while on_activate has not returned."""

    async def on_activate(self) -> None:
        timer = self.register_timer(self.tick, due=0)

        def fired_and_deferred() -> bool:  # it came due, and waits for on_activate to end
            handle = timer._handle
            return handle is not None and handle.when() > timer._next

        await until(fired_and_deferred, "the timer came due while activating", timeout=2)


class Harness:
    def __init__(self) -> None:
        memory = MemoryStore()
        self.storage, self.directory = MemoryGrainStorage(memory), MemoryGrainDirectory(memory)
        self.registry = GrainRegistry()
        for cls in (Ticker, SelfCancel, StartsItself):
            self.registry.register(cls)
        self.membership: InMemoryMembership = InMemoryCluster().join("s1")
        self.pool = BlockingPool(1)
        self.metrics = SiloMetrics()
        self.catalog = Catalog("s1", self.membership, self.storage, self.directory, self.metrics,
                               lambda t, k: None, 60.0, 100,  # type: ignore[arg-type, return-value]
                               self.pool)

    async def activate(self, grain_type: str, key: str) -> Activation:
        grain = GrainId(grain_type, key)
        registration = await self.directory.register(
            grain, self.membership.incarnation, "s1", self.membership.address
        )
        return await self.catalog.activate(grain, self.registry.get(grain_type), registration)

    def ticks(self, outcome: str, grain_type: str = "Ticker") -> float:
        value = self.metrics.registry.get_sample_value(
            "grainery_timer_ticks_total", {"grain_type": grain_type, "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    LOG.clear()
    SEEN.clear()
    GATE.clear()
    GATE["slow"], GATE["hold"] = asyncio.Event(), asyncio.Event()
    made = Harness()
    yield made
    for activation in list(made.catalog._everything()):
        activation.abandon()
    made.pool.close()


def grain_of(activation: Activation) -> Ticker:
    assert isinstance(activation.grain, Ticker)
    return activation.grain


def count(entry: str) -> int:
    return LOG.count(entry)


async def witness_ticks(grain: Ticker, more: int) -> None:
    """Wait for ``more`` ticks of a witness timer: everything that was due meanwhile was."""
    start = count(f"witness {grain.key}")
    await until(lambda: count(f"witness {grain.key}") >= start + more, f"{more} witness ticks")


def call(activation: Activation, method: str) -> asyncio.Future[Any]:
    deadline = asyncio.get_running_loop().time() + 5
    return activation.call(activation.grain_type.method(method), GrainCall(
        activation.grain_id.grain_type, activation.grain_id.key, method, [], deadline=deadline,
    ))


# ----- ticking and stopping -------------------------------------------------------
async def test_ticks_run_while_active_and_none_after_deactivation(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    witness = grain_of(await harness.activate("Ticker", "w"))
    witness.register_timer(witness.witness, due=0, period=MIN_PERIOD)
    timer = grain_of(activation).register_timer(grain_of(activation).tick, due=0, period=0.01)
    await until(lambda: count("tick a") >= 3, "three ticks")
    activation.deactivate("idle")
    await activation.wait_gone()
    assert timer.cancelled and activation.timers is not None and not activation.timers.live
    await witness_ticks(witness, 5)
    mine = [e for e in LOG if e.endswith(" a")]
    assert mine[-1] == "deactivate a", mine  # no tick after on_deactivate started
    assert harness.ticks("ok") >= 3


async def test_a_one_shot_timer_ticks_once(harness: Harness) -> None:
    grain = grain_of(await harness.activate("Ticker", "a"))
    witness = grain_of(await harness.activate("Ticker", "w"))
    witness.register_timer(witness.witness, due=0, period=MIN_PERIOD)
    timer = grain.register_timer(grain.tick, due=0)
    await until(lambda: count("tick a") == 1, "the tick")
    await witness_ticks(witness, 5)
    assert count("tick a") == 1 and timer.ticks == 1


async def test_a_timer_due_during_on_activate_ticks_once_active(harness: Harness) -> None:
    activation = await harness.activate("StartsItself", "a")
    await until(lambda: count("tick a") == 1, "the tick registered in on_activate")
    assert activation.timers is not None
    timer = next(iter(activation.timers.live), None)
    assert timer is None  # a one-shot timer is gone once fired
    assert harness.ticks("skipped", "StartsItself") == 0


async def test_fencing_cancels_timers(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    witness = grain_of(await harness.activate("Ticker", "w"))
    timer = grain_of(activation).register_timer(grain_of(activation).tick, due=0, period=0.01)
    await until(lambda: count("tick a") >= 2, "two ticks")
    activation.abandon()
    assert timer.cancelled
    after = count("tick a")
    witness.register_timer(witness.witness, due=0, period=MIN_PERIOD)
    await witness_ticks(witness, 5)
    assert count("tick a") == after


# ----- no stacking ----------------------------------------------------------------
async def test_a_slow_tick_is_skipped_not_stacked(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    grain = grain_of(activation)
    timer = grain.register_timer(grain.slow, due=0, period=MIN_PERIOD)
    await until(lambda: timer.skipped >= 5, "five skipped ticks")
    assert count("slow start a") == 1 and activation.turns == 1 and activation.queued == 0
    assert harness.ticks("skipped") >= 5
    GATE["slow"].set()
    await until(lambda: timer.ticks >= 3, "ticks resume once the slow one ended")


# ----- turn order -----------------------------------------------------------------
async def test_a_tick_waits_its_turn_behind_a_running_call(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    grain = grain_of(activation)
    held = call(activation, "hold")
    await until(lambda: "hold start a" in LOG, "the call started")
    timer = grain.register_timer(grain.tick, due=0, period=None)
    await until(lambda: activation.queued == 1, "the tick queued")
    assert "tick a" not in LOG and timer.running
    GATE["hold"].set()
    await held
    await until(lambda: "tick a" in LOG, "the tick ran")
    assert LOG.index("hold end a") < LOG.index("tick a")


async def test_an_interleaved_tick_runs_while_a_call_waits(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    grain = grain_of(activation)
    held = call(activation, "hold")
    await until(lambda: "hold start a" in LOG, "the call started")
    grain.register_timer(grain.tick, due=0, period=0.01, interleave=True)
    await until(lambda: count("tick a") >= 2, "ticks while the call waits")
    assert "hold end a" not in LOG
    GATE["hold"].set()
    await held


# ----- idle -----------------------------------------------------------------------
async def test_ticks_do_not_keep_an_idle_grain_alive(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    grain = grain_of(activation)
    grain.register_timer(grain.tick, due=0, period=0.01)
    long_ago = time.monotonic() - 1000
    activation.last_active = long_ago
    await until(lambda: count("tick a") >= 3, "three ticks")
    assert activation.last_active == long_ago
    await until(lambda: harness.catalog.collect_idle() == 1, "collected as idle")
    await activation.wait_gone()
    assert "deactivate a" in LOG


async def test_keep_alive_ticks_count_as_activity(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    grain = grain_of(activation)
    grain.register_timer(grain.tick, due=0, period=0.01, keep_alive=True)
    long_ago = time.monotonic() - 1000
    activation.last_active = long_ago
    await until(lambda: count("tick a") >= 3, "three ticks")
    assert activation.last_active > long_ago + 900
    assert harness.catalog.collect_idle() == 0 and activation.phase is Phase.ACTIVE


# ----- failures -------------------------------------------------------------------
async def test_a_failing_tick_is_logged_and_counted_and_the_timer_goes_on(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="grainery.grains")
    grain = grain_of(await harness.activate("Ticker", "a"))
    timer = grain.register_timer(grain.boom, due=0, period=0.01)
    await until(lambda: timer.failed >= 3, "three failed ticks")
    assert harness.ticks("failed") >= 3 and not timer.cancelled
    assert any("timer boom" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_tick_sees_a_synthetic_call(harness: Harness) -> None:
    grain = grain_of(await harness.activate("Ticker", "a"))
    grain.register_timer(grain.context, due=0, period=2.0)
    await until(lambda: SEEN, "the tick ran")
    method, values, chain, deadline = SEEN[0]
    assert method == "context" and values == {} and chain == ()
    assert deadline is not None and 0 < deadline <= 2.0


async def test_cancel_from_inside_a_tick(harness: Harness) -> None:
    activation = await harness.activate("SelfCancel", "a")
    grain = activation.grain
    assert isinstance(grain, SelfCancel)
    grain.handle = grain.register_timer(grain.tick, due=0, period=MIN_PERIOD)
    grain.register_timer(grain.witness, due=0, period=MIN_PERIOD)
    await until(lambda: grain.handle is not None and grain.handle.cancelled, "cancelled")
    await witness_ticks(grain, 5)
    assert count("tick a") == 2


# ----- bad arguments --------------------------------------------------------------
async def test_bad_timer_arguments_are_refused(harness: Harness) -> None:
    activation = await harness.activate("Ticker", "a")
    grain = grain_of(activation)
    other = grain_of(await harness.activate("Ticker", "b"))

    async def free() -> None:
        return None

    with pytest.raises(TypeError, match="method of this grain"):
        grain.register_timer(free, due=0)
    with pytest.raises(TypeError, match="method of this grain"):
        grain.register_timer(other.tick, due=0)
    with pytest.raises(TypeError, match="async method"):
        grain.register_timer(grain.sync_method, due=0)  # type: ignore[arg-type]
    for due in (-1, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="due"):
            grain.register_timer(grain.tick, due=due)  # type: ignore[arg-type]
    for period in (0, MIN_PERIOD / 2, -1, math.nan, math.inf, False):
        with pytest.raises(ValueError, match="period"):
            grain.register_timer(grain.tick, due=0, period=period)
    for _ in range(MAX_TIMERS):
        grain.register_timer(grain.tick, due=3600)
    with pytest.raises(ValueError, match="limit"):
        grain.register_timer(grain.tick, due=3600)
    activation.deactivate("idle")
    with pytest.raises(RuntimeError, match="deactivating"):
        grain.register_timer(grain.tick, due=0)


# ----- stateless workers ----------------------------------------------------------
@stateless_worker(max_local=2)
class TickingWorker(Grain):
    """Each activation has its own timers."""

    async def start(self) -> None:
        self.register_timer(self.tick, due=0, period=MIN_PERIOD)

    async def tick(self) -> None:
        LOG.append(f"worker tick {id(self)}")

    async def on_deactivate(self, reason: str) -> None:
        LOG.append(f"worker deactivate {id(self)}")


async def test_a_stateless_worker_activation_has_its_own_timers(harness: Harness) -> None:
    registry = GrainRegistry()
    registry.register(TickingWorker)
    cluster = InProcessCluster(registry)
    try:
        silo = cluster.add("a")
        await silo.call("TickingWorker", "pool", "start")
        await until(lambda: sum(e.startswith("worker tick") for e in LOG) >= 3, "worker ticks")
        assert silo.catalog.deactivate_idle("idle") == 1
        await until(lambda: any(e.startswith("worker deactivate") for e in LOG), "deactivated")
        ticked = sum(e.startswith("worker tick") for e in LOG)
        witness = grain_of(await harness.activate("Ticker", "w"))
        witness.register_timer(witness.witness, due=0, period=MIN_PERIOD)
        await witness_ticks(witness, 5)
        assert sum(e.startswith("worker tick") for e in LOG) == ticked
    finally:
        cluster.close()
