"""The dispatcher's admission rules, in-process: deadlines of queued calls, the per-grain
queue bound, the in-flight bound, a silo that does not serve, invalid calls, and queued
calls of a silo that fences itself. Real dispatcher, catalog and locator over the twins
(tests/inprocess.py); "touched no storage" is asserted on the operations the silo made."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from grainery.client.errors import (
    DeadlineExceededError,
    GrainError,
    InvalidArgumentsError,
    OverloadedError,
    SiloUnavailableError,
    UnknownGrainTypeError,
    UnknownMethodError,
)
from grainery.client.routing import GrainId
from grainery.silo.dispatcher import DispatchLimits
from grainery.silo.grain import Grain
from tests.eventually import until
from tests.inprocess import ClusterFactory, InProcessCluster, InProcessSilo

RAN: list[str] = []  # what grain code started, in order


class Gate:
    turn: asyncio.Event  # set by the fixture: each test gets its own (loops differ)


class Worker(Grain):
    async def on_activate(self) -> None:
        RAN.append(f"activate {self.key}")

    async def hold(self) -> str:
        RAN.append(f"hold {self.key}")
        await Gate.turn.wait()
        return "held"

    async def mark(self, i: int) -> int:
        RAN.append(f"mark {i}")
        return i

    async def _private(self) -> None:
        RAN.append("private")


Build = Callable[..., InProcessCluster]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    RAN.clear()
    Gate.turn = asyncio.Event()
    make = ClusterFactory(Worker)
    yield make
    make.close()




async def hold(silo: InProcessSilo, key: str = "k") -> asyncio.Future[Any]:
    """Start a call that keeps ``key``'s grain busy until Gate.turn is set."""
    busy = asyncio.ensure_future(silo.call("Worker", key, "hold", timeout=30))
    await until(lambda: f"hold {key}" in RAN, "the holding turn started")
    return busy


def queued(silo: InProcessSilo, key: str = "k") -> int:
    activation = silo.catalog.get(GrainId("Worker", key))
    return activation.queued if activation is not None else 0


async def test_a_queued_call_whose_deadline_passed_is_not_run(build: Build) -> None:
    a = build().add("a")
    busy = await hold(a)
    with pytest.raises(DeadlineExceededError):
        await a.call("Worker", "k", "mark", 1, timeout=0.05)
    Gate.turn.set()
    assert await busy == "held"
    assert await a.call("Worker", "k", "mark", 2) == 2  # the mailbox went past it
    assert RAN == ["activate k", "hold k", "mark 2"]


async def test_a_full_grain_queue_refuses_with_overloaded(build: Build) -> None:
    a = build(max_queue_per_grain=2).add("a")
    busy = await hold(a)
    waiting = [asyncio.ensure_future(a.call("Worker", "k", "mark", i)) for i in range(2)]
    await until(lambda: queued(a) == 2, "two calls queued")
    with pytest.raises(OverloadedError) as refused:
        await a.call("Worker", "k", "mark", 99)
    assert refused.value.retry_safe
    Gate.turn.set()
    assert await busy == "held" and await asyncio.gather(*waiting) == [0, 1]
    assert "mark 99" not in RAN


async def test_the_in_flight_bound_refuses_with_overloaded_before_any_storage(
    build: Build,
) -> None:
    cluster = build(limits=DispatchLimits(max_in_flight=2))
    a = cluster.add("a")
    busy = await hold(a)
    waiting = asyncio.ensure_future(a.call("Worker", "k", "mark", 1))
    await until(lambda: a.dispatcher.in_flight == 2, "two calls in flight")
    with pytest.raises(OverloadedError) as refused:
        await a.call("Worker", "other", "mark", 2)
    assert refused.value.retry_safe
    assert cluster.ops_for("Worker", "other") == []
    Gate.turn.set()
    assert await busy == "held" and await waiting == 1
    assert a.dispatcher.in_flight == 0 and a.dispatcher.idle.is_set()
    assert await a.call("Worker", "other", "mark", 3) == 3  # admitted again


@pytest.mark.parametrize("why", ["fenced", "draining"])
async def test_a_silo_that_does_not_serve_refuses_retry_safely(build: Build, why: str) -> None:
    cluster = build()
    a = cluster.add("a")
    if why == "fenced":
        a.fence()
    else:
        a.dispatcher.admitting = False
    with pytest.raises(SiloUnavailableError) as refused:
        await a.call("Worker", "k", "mark", 1)
    assert refused.value.retry_safe
    assert cluster.ops == [] and RAN == []


@pytest.mark.parametrize(("grain_type", "method", "args", "error"), [
    ("Nope", "mark", [1], UnknownGrainTypeError),
    ("Worker", "nope", [1], UnknownMethodError),
    ("Worker", "_private", [], UnknownMethodError),
    ("Worker", "on_activate", [], UnknownMethodError),
    ("Worker", "mark", [], InvalidArgumentsError),
    ("Worker", "mark", [1, 2], InvalidArgumentsError),
])
async def test_an_invalid_call_touches_no_storage(
    build: Build, grain_type: str, method: str, args: list[Any], error: type[GrainError],
) -> None:
    cluster = build()
    a = cluster.add("a")
    with pytest.raises(error):
        await a.call(grain_type, "k", method, *args)
    assert cluster.ops == [] and RAN == [] and len(a.catalog) == 0
    assert cluster.store.key_count() == 0


async def test_an_oversized_key_touches_no_storage(build: Build) -> None:
    cluster = build()
    a = cluster.add("a")
    with pytest.raises(InvalidArgumentsError):
        await a.call("Worker", "k" * 1025, "mark", 1)
    assert cluster.ops == [] and RAN == []


async def test_queued_calls_of_a_silo_that_fences_fail_retry_safely(build: Build) -> None:
    """Queued calls that never ran reach their callers as retry-safe UNAVAILABLE (never as
    an application error), and the turn that was running finishes."""
    a = build().add("a")
    busy = await hold(a)
    waiting = [asyncio.ensure_future(a.call("Worker", "k", "mark", i)) for i in range(3)]
    await until(lambda: queued(a) == 3, "three calls queued")
    a.fence()
    for call in waiting:
        with pytest.raises(SiloUnavailableError) as refused:
            await call
        assert refused.value.retry_safe
    Gate.turn.set()
    assert await busy == "held"
    assert RAN == ["activate k", "hold k"]
