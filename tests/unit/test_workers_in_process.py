"""Stateless workers, in-process: local activation on the silo that receives the call, at
most ``max_local`` activations (and so concurrent calls) per worker id and silo, queueing
beyond that with the per-grain queue bound, no directory or storage operation ever, the state
API refused, idle collection, drain and fencing, grain-to-grain calls kept on the caller's
silo, and a client that spreads worker calls over the silos once a response told it.
Real catalog, locator and dispatcher over the twins (tests/inprocess.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from grainery.client.codec import decode_result
from grainery.client.errors import GrainApplicationError, OverloadedError, SiloUnavailableError
from grainery.client.grain_client import GrainClient
from grainery.client.routing import GrainId
from grainery.silo.decorators import stateless_worker
from grainery.silo.grain import Grain
from tests.eventually import until
from tests.inprocess import ClusterFactory, InProcessCluster, InProcessSilo

MAX_LOCAL = 3
SERIAL = itertools.count(1)


class Track:
    """Per-test record of what worker code did (reset by the fixture)."""

    gate: asyncio.Event
    running: Counter[str] = Counter()  # silo id -> calls running now
    most: Counter[str] = Counter()  # silo id -> the most ever running at once
    activated: list[tuple[str, int]] = []  # (silo id, activation serial)
    deactivated: list[tuple[str, str]] = []  # (silo id, reason)


@stateless_worker(max_local=MAX_LOCAL)
class Tool(Grain):
    async def on_activate(self) -> None:
        self.serial = next(SERIAL)
        Track.activated.append((self.silo_id, self.serial))

    async def on_deactivate(self, reason: str) -> None:
        Track.deactivated.append((self.silo_id, reason))

    async def work(self) -> dict[str, Any]:
        """Runs until the test opens the gate; records how many ran at once on this silo."""
        Track.running[self.silo_id] += 1
        Track.most[self.silo_id] = max(Track.most[self.silo_id], Track.running[self.silo_id])
        try:
            await Track.gate.wait()
        finally:
            Track.running[self.silo_id] -= 1
        return {"silo": self.silo_id, "activation": self.serial}

    async def where(self) -> str:
        return self.silo_id

    async def read_state_attribute(self) -> Any:
        return self.state

    async def assign_state(self) -> None:
        self.state = {"n": 1}

    async def write(self) -> None:
        await self.write_state()

    async def read(self) -> None:
        await self.read_state()

    async def clear(self) -> None:
        await self.clear_state()

    async def fail(self) -> None:
        raise ValueError("worker failed")


class Caller(Grain):
    """An ordinary grain that calls the worker."""

    async def ask_tool(self, key: str) -> str:
        where: str = await self.get_grain("Tool", key).where()
        return where


Build = Callable[..., InProcessCluster]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    Track.gate = asyncio.Event()
    Track.running, Track.most = Counter(), Counter()
    Track.activated, Track.deactivated = [], []
    make = ClusterFactory(Tool, Caller)
    yield make
    Track.gate.set()
    make.close()




def activations(silo: InProcessSilo, grain_type: str = "Tool") -> int:
    return silo.catalog.counts_by_type().get(grain_type, 0)


def gauge(silo: InProcessSilo, grain_type: str = "Tool") -> float:
    value = silo.metrics.registry.get_sample_value(
        "grainery_activations", {"grain_type": grain_type}
    )
    return value or 0.0


async def test_a_worker_runs_on_the_silo_that_receives_the_call_without_the_store(
    build: Build,
) -> None:
    cluster = build()
    a, b = cluster.add("a"), cluster.add("b")
    key = cluster.key_owned_by(b, "Tool")  # the ring would send it to b
    response = await a.request("Tool", key, "where")
    assert decode_result(response.result_json) == "a"
    assert response.stateless_worker and response.address == a.address
    assert await b.call("Tool", key, "where") == "b"
    assert a.peers.sent == [] and b.peers.sent == []  # nothing forwarded
    assert cluster.ops_for("Tool", key) == []  # no directory entry, no state read
    assert cluster.entry("Tool", key) is None
    assert (activations(a), activations(b)) == (1, 1)
    assert (gauge(a), gauge(b)) == (1.0, 1.0)
    plain = await a.request("Caller", "c", "ask_tool", key)  # an ordinary grain: not flagged
    assert not plain.stateless_worker


async def test_never_more_than_max_local_activations_run_at_once_and_the_rest_queue(
    build: Build,
) -> None:
    a = build().add("a")
    calls = [asyncio.ensure_future(a.call("Tool", "k", "work", timeout=10)) for _ in range(12)]
    await until(lambda: Track.running["a"] == MAX_LOCAL, f"{MAX_LOCAL} calls running")
    await until(lambda: a.dispatcher.in_flight == 12, "every call admitted")
    assert activations(a) == MAX_LOCAL and len(Track.activated) == MAX_LOCAL
    queued = sum(x.queued for x in a.catalog.workers.activations())
    assert queued == 12 - MAX_LOCAL  # the rest wait in the activations' queues
    Track.gate.set()
    results = await asyncio.gather(*calls)
    assert Track.most["a"] == MAX_LOCAL  # never more at once
    served = Counter(r["activation"] for r in results)
    assert len(served) == MAX_LOCAL and sum(served.values()) == 12
    assert len(Track.activated) == MAX_LOCAL  # no activation beyond max_local was made


async def test_an_idle_activation_is_reused_before_a_new_one_is_made(build: Build) -> None:
    a = build().add("a")
    Track.gate.set()
    for _ in range(5):
        await a.call("Tool", "k", "work")
    assert len(Track.activated) == 1 and activations(a) == 1


async def test_worker_ids_have_pools_of_their_own(build: Build) -> None:
    a = build().add("a")
    calls = [asyncio.ensure_future(a.call("Tool", key, "work", timeout=10))
             for key in ("x", "y") for _ in range(MAX_LOCAL)]
    await until(lambda: Track.running["a"] == 2 * MAX_LOCAL, "both pools full")
    assert activations(a) == 2 * MAX_LOCAL
    Track.gate.set()
    await asyncio.gather(*calls)


async def test_calls_queued_beyond_the_grain_queue_bound_are_refused_as_overloaded(
    build: Build,
) -> None:
    a = build(max_queue_per_grain=4).add("a")
    calls = [asyncio.ensure_future(a.call("Tool", "k", "work", timeout=10))
             for _ in range(MAX_LOCAL + 4)]
    await until(lambda: sum(x.queued for x in a.catalog.workers.activations()) == 4,
                "four calls queued over the activations")
    with pytest.raises(OverloadedError) as refused:
        await a.call("Tool", "k", "work")
    assert refused.value.retry_safe and "stateless worker Tool/k" in refused.value.message
    Track.gate.set()
    assert len(await asyncio.gather(*calls)) == MAX_LOCAL + 4


@pytest.mark.parametrize("method", ["read_state_attribute", "assign_state", "write", "read",
                                    "clear"])
async def test_the_state_api_raises_a_clear_error(build: Build, method: str) -> None:
    cluster = build()
    a = cluster.add("a")
    with pytest.raises(GrainApplicationError) as refused:
        await a.call("Tool", "k", method)
    assert refused.value.error_type == "StatelessWorkerStateError"
    assert "stateless workers have no stored state" in refused.value.message
    assert cluster.ops_for("Tool", "k") == []


async def test_a_failed_turn_gives_a_worker_no_state(build: Build) -> None:
    """After a failed turn the runtime restores ``self.state``: for a worker, that restore
    must neither fail nor give it a readable state."""
    a = build().add("a")
    with pytest.raises(GrainApplicationError, match="worker failed"):
        await a.call("Tool", "k", "fail")
    with pytest.raises(GrainApplicationError) as refused:
        await a.call("Tool", "k", "read_state_attribute")
    assert refused.value.error_type == "StatelessWorkerStateError"
    assert len(Track.activated) == 1  # the same activation served both


async def test_idle_workers_are_collected_and_unregister_nothing(build: Build) -> None:
    cluster = build(idle_timeout=0.0)
    a = cluster.add("a")
    calls = [asyncio.ensure_future(a.call("Tool", "k", "work", timeout=10))
             for _ in range(MAX_LOCAL)]
    await until(lambda: Track.running["a"] == MAX_LOCAL, "every activation busy")
    assert a.catalog.collect_idle() == 0  # busy ones stay
    Track.gate.set()
    await asyncio.gather(*calls)
    assert gauge(a) == MAX_LOCAL
    assert a.catalog.collect_idle() == MAX_LOCAL
    await until(lambda: activations(a) == 0, "the workers deactivated")
    assert Track.deactivated == [("a", "idle")] * MAX_LOCAL
    assert gauge(a) == 0.0 and len(a.catalog) == 0
    assert cluster.ops_for("Tool", "k") == []
    assert await a.call("Tool", "k", "where") == "a"  # a new activation serves the next call
    assert len(Track.activated) == MAX_LOCAL + 1


async def test_a_drain_deactivates_workers_and_refuses_new_activations(build: Build) -> None:
    a = build().add("a")
    assert await a.call("Tool", "k", "where") == "a"
    a.catalog.accepting = False
    with pytest.raises(SiloUnavailableError):
        await a.call("Tool", "other", "where")  # no activation of a new worker id
    await a.catalog.deactivate_all("shutdown", timeout=5)
    assert Track.deactivated == [("a", "shutdown")] and activations(a) == 0


async def test_a_fenced_silo_drops_its_workers_and_refuses_their_calls(build: Build) -> None:
    a = build().add("a")
    busy = asyncio.ensure_future(a.call("Tool", "k", "work", timeout=10))
    await until(lambda: Track.running["a"] == 1, "a worker call running")
    queued = asyncio.ensure_future(a.call("Tool", "k", "where", timeout=10))
    await until(lambda: len(Track.activated) == 2, "a second activation made")
    a.fence()
    assert activations(a) == 0 and len(a.catalog) == 0 and gauge(a) == 0.0
    assert not a.catalog.quiescent()  # the running turn may finish first
    with pytest.raises(SiloUnavailableError):
        await a.call("Tool", "k", "where")
    Track.gate.set()
    await asyncio.gather(busy, queued, return_exceptions=True)
    await until(a.catalog.quiescent, "the abandoned turn finished")


async def test_a_grain_to_grain_call_to_a_worker_stays_on_the_callers_silo(
    build: Build,
) -> None:
    cluster = build()
    a, b = cluster.add("a"), cluster.add("b")
    caller = cluster.key_owned_by(a, "Caller")
    tool = cluster.key_owned_by(b, "Tool")  # the ring would send it to b
    assert await a.call("Caller", caller, "ask_tool", tool) == "a"
    assert a.peers.sent == []  # no hop
    assert cluster.ops_for("Tool", tool) == []


async def test_the_client_spreads_worker_calls_over_the_silos_once_told(build: Build) -> None:
    cluster = build()
    silos = [cluster.add(name) for name in ("a", "b", "c")]
    client = GrainClient(silos[0].address, refresh_interval=0)
    client.pool = silos[0].peers  # type: ignore[assignment] # calls go to in-process silos
    client._adopt(silos[0].membership.snapshot)
    try:
        first = await client.get_grain("Tool", "k").where()
        owner = client.router.ring.owner(GrainId("Tool", "k"))
        assert owner is not None and first == owner.silo_id  # not known yet: the ring owner
        assert client.router.is_stateless("Tool")
        served = Counter([await client.get_grain("Tool", "k").where() for _ in range(30)])
        assert served == {"a": 10, "b": 10, "c": 10}  # round-robin over the active silos
        assert not client.router.is_stateless("Caller")
    finally:
        await client.close()
