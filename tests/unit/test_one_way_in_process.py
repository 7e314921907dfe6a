"""One-way calls, in process: answered ``null`` once admitted, run later in order, their own
deadline, admission limits, failures logged and counted, forwarded calls answered by the
owner. Real dispatcher, catalog and locator over the twins (tests/inprocess.py); the same
through real silos: tests/integration/test_reentrancy.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from grainery import one_way
from grainery.client.errors import OverloadedError
from grainery.silo.call import current_call
from grainery.silo.grain import Grain
from tests.eventually import until
from tests.inprocess import ClusterFactory, InProcessCluster, InProcessSilo

RAN: list[str] = []


class Gate:
    open: asyncio.Event  # set per test (each test has its own loop)


class Inbox(Grain):
    async def hold(self) -> None:
        RAN.append("hold")
        await Gate.open.wait()

    @one_way
    async def deliver(self, i: int) -> str:
        await Gate.open.wait()
        call = current_call()
        assert call is not None
        RAN.append(f"deliver {i} chain={list(call.chain)}")
        return "dropped"  # a one-way result goes nowhere

    @one_way
    async def explode(self, message: str) -> None:
        raise ValueError(message)

    async def on_deactivate(self, reason: str) -> None:
        RAN.append(f"deactivate {reason}")


Build = Callable[..., InProcessCluster]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    RAN.clear()
    Gate.open = asyncio.Event()
    make = ClusterFactory(Inbox)
    yield make
    make.close()




def failures(silo: InProcessSilo, method: str) -> float:
    value = silo.metrics.registry.get_sample_value(
        "grainery_one_way_failures_total", {"grain_type": "Inbox", "method": method}
    )
    return value or 0.0


async def test_one_way_calls_are_answered_before_they_run_then_run_in_order(
    build: Build,
) -> None:
    a = build().add("a")
    responses = [await a.request("Inbox", "k", "deliver", i) for i in range(50)]
    assert {r.result_json for r in responses} == {"null"} and RAN == []
    Gate.open.set()
    await until(lambda: len(RAN) == 50, "every one-way call ran")
    assert RAN == [f"deliver {i} chain=[]" for i in range(50)]


async def test_a_one_way_call_runs_after_its_callers_deadline(build: Build) -> None:
    a = build().add("a")
    busy = asyncio.ensure_future(a.call("Inbox", "k", "hold", timeout=30))
    await until(lambda: RAN == ["hold"], "the grain is busy")
    loop = asyncio.get_running_loop()
    sent = loop.time()
    assert (await a.request("Inbox", "k", "deliver", 1, timeout=0.05)).result_json == "null"
    await until(lambda: loop.time() > sent + 0.05, "the caller's deadline passed")
    Gate.open.set()
    await busy
    await until(lambda: "deliver 1 chain=[]" in RAN, "the one-way call ran")
    assert failures(a, "deliver") == 0


async def test_a_full_queue_refuses_a_one_way_call(build: Build) -> None:
    a = build(max_queue_per_grain=2).add("a")
    busy = asyncio.ensure_future(a.call("Inbox", "k", "hold", timeout=30))
    await until(lambda: RAN == ["hold"], "the grain is busy")
    for i in range(2):
        await a.request("Inbox", "k", "deliver", i)
    with pytest.raises(OverloadedError) as refused:
        await a.request("Inbox", "k", "deliver", 99)
    assert refused.value.retry_safe
    Gate.open.set()
    await busy
    await until(lambda: len(RAN) == 3, "the admitted calls ran")
    assert "deliver 99 chain=[]" not in RAN


async def test_a_failing_one_way_call_is_logged_and_counted(
    build: Build, caplog: pytest.LogCaptureFixture,
) -> None:
    a = build().add("a")
    caplog.set_level(logging.ERROR, logger="grainery.grains")
    response = await a.request("Inbox", "k-fails", "explode", "kaboom")
    assert response.result_json == "null"
    await until(lambda: failures(a, "explode") == 1, "the failure counted")
    assert "one-way call Inbox/k-fails.explode failed after it was answered: " \
        "ValueError: kaboom" in caplog.text
    outcome = a.metrics.registry.get_sample_value(
        "grainery_calls_total", {"grain_type": "Inbox", "method": "explode",
                                 "outcome": "application"})
    assert outcome == 1


async def test_a_forwarded_one_way_call_is_answered_by_the_owner(build: Build) -> None:
    cluster = build()
    a, b = cluster.add("a"), cluster.add("b")
    key = cluster.key_owned_by(b, "Inbox")
    response = await a.request("Inbox", key, "deliver", 7)
    assert response.result_json == "null" and response.silo_id == "b"
    assert RAN == []
    Gate.open.set()
    await until(lambda: RAN == ["deliver 7 chain=[]"], "the one-way call ran on the owner")


async def test_queued_one_way_calls_run_before_a_shutdown_deactivates_the_grain(
    build: Build,
) -> None:
    a = build().add("a")
    for i in range(3):
        await a.request("Inbox", "k", "deliver", i)
    stopping = asyncio.ensure_future(a.catalog.deactivate_all("shutdown", 10))
    Gate.open.set()
    await stopping
    assert RAN == [*(f"deliver {i} chain=[]" for i in range(3)), "deactivate shutdown"]


async def test_a_one_way_call_dropped_unrun_by_a_fenced_silo_is_logged_and_counted(
    build: Build, caplog: pytest.LogCaptureFixture,
) -> None:
    a = build().add("a")
    caplog.set_level(logging.ERROR, logger="grainery.grains")
    busy = asyncio.ensure_future(a.call("Inbox", "k", "hold", timeout=30))
    await until(lambda: RAN == ["hold"], "the grain is busy")
    assert (await a.request("Inbox", "k", "deliver", 1)).result_json == "null"
    a.fence()
    await until(lambda: failures(a, "deliver") == 1, "the dropped call counted")
    assert "one-way call Inbox/k.deliver failed after it was answered: SiloUnavailableError: " \
        "silo fenced while Inbox/k.deliver was queued; not run" in caplog.text
    Gate.open.set()
    await busy
    assert RAN == ["hold"]
