"""The runtime's placement rules, in-process: single activation, forwarding to the ring
owner, takeover from a dead incarnation, redispatch around a deactivation, idle collection
and the sweep of dead silos' entries. Real catalog, locator and dispatcher over the twins of
the store and the membership (tests/inprocess.py); each test asserts on what the shared
MemoryStore holds or on what the silos asked of it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.codec import decode_result
from grainery.client.errors import SiloUnavailableError
from grainery.client.routing import GrainId
from grainery.silo.activation import Activation, Redispatch
from grainery.silo.cluster.sweeper import DirectorySweeper
from grainery.silo.grain import Grain
from grainery.silo.registry import GrainRegistry, MethodSpec
from tests.eventually import until
from tests.inprocess import InProcessCluster, InProcessSilo

JOURNAL: list[tuple[str, str, str]] = []  # (event, silo id, key), in the order they happened
SERIAL = itertools.count(1)


class Hooks:
    """Per-test gates and callbacks the grain consults (reset by the fixture)."""

    deactivate_gate: asyncio.Event | None = None
    turn_gate: asyncio.Event | None = None
    on_activated: Callable[[Counter], None] | None = None


class Counter(Grain):
    async def on_activate(self) -> None:
        self.serial = next(SERIAL)
        JOURNAL.append(("activate", self.silo_id, self.key))
        if Hooks.on_activated is not None:
            Hooks.on_activated(self)

    async def on_deactivate(self, reason: str) -> None:
        JOURNAL.append((f"deactivate:{reason}", self.silo_id, self.key))
        if Hooks.deactivate_gate is not None:
            await Hooks.deactivate_gate.wait()

    async def add(self, n: int) -> dict[str, Any]:
        self.state["n"] = self.state.get("n", 0) + n
        await self.write_state()
        return {"n": self.state["n"], "silo": self.silo_id}

    async def where(self) -> str:
        return self.silo_id

    async def hold(self) -> str:
        assert Hooks.turn_gate is not None
        await Hooks.turn_gate.wait()
        return "held"

    async def activation(self) -> int:
        return self.serial

    async def ask(self, key: str) -> str:
        where: str = await self.get_grain("Counter", key).where()
        return where


@pytest.fixture
async def cluster() -> AsyncIterator[InProcessCluster]:
    JOURNAL.clear()
    Hooks.deactivate_gate, Hooks.turn_gate, Hooks.on_activated = None, None, None
    registry = GrainRegistry()
    registry.register(Counter)
    built = InProcessCluster(registry, idle_timeout=0.0)  # collect_idle takes any idle grain
    yield built
    built.close()




def ring_owner(silo: InProcessSilo, key: str) -> str:
    """The silo id the ring (as ``silo`` sees it) places Counter ``key`` on."""
    member = silo.membership.ring.owner(GrainId("Counter", key))
    assert member is not None
    return member.silo_id


def events(kind: str) -> list[tuple[str, str, str]]:
    return [event for event in JOURNAL if event[0] == kind]


async def test_concurrent_first_calls_make_one_activation(cluster: InProcessCluster) -> None:
    a = cluster.add("a")
    results = await asyncio.gather(*(a.call("Counter", "k", "add", 1) for _ in range(50)))
    assert sorted(r["n"] for r in results) == list(range(1, 51))
    assert events("activate") == [("activate", "a", "k")]
    registers = [op for op in cluster.ops_for("Counter", "k") if op.operation == "register"]
    assert len(registers) == 1
    entry = cluster.entry("Counter", "k")
    assert entry is not None and entry.incarnation == a.membership.incarnation


async def test_a_call_for_another_silos_grain_is_forwarded_there(
    cluster: InProcessCluster,
) -> None:
    a, b = cluster.add("a"), cluster.add("b")
    key = cluster.key_owned_by(b, "Counter")
    response = await a.request("Counter", key, "where")
    assert decode_result(response.result_json) == "b"
    assert (response.silo_id, response.address) == ("b", b.address)  # the client learns it
    assert [(sent.address, sent.request.hops) for sent in a.peers.sent] == [(b.address, 1)]
    assert 0 < a.peers.sent[0].timeout <= 5.0  # the time the caller had left, not more
    assert a.catalog.get(GrainId("Counter", key)) is None
    assert b.catalog.get(GrainId("Counter", key)) is not None
    entry = cluster.entry("Counter", key)
    assert entry is not None and entry.incarnation == b.membership.incarnation


async def test_a_grain_to_grain_call_goes_straight_to_the_owner(
    cluster: InProcessCluster,
) -> None:
    a, b = cluster.add("a"), cluster.add("b")
    caller, callee = cluster.key_owned_by(a, "Counter", "x"), cluster.key_owned_by(b, "Counter")
    assert await a.call("Counter", caller, "ask", callee, timeout=2.0) == "b"
    assert [(sent.address, sent.request.hops) for sent in a.peers.sent] == [(b.address, 0)]
    assert 0 < a.peers.sent[0].timeout <= 2.0  # never more than the outer call has left


async def test_a_grain_stays_where_the_directory_says_when_the_ring_moves(
    cluster: InProcessCluster,
) -> None:
    """The ring only suggests: a grain active on a stays there after b joins and becomes
    its ring owner; b forwards to a (the directory decides) until the grain moves."""
    a = cluster.add("a")
    keys = [f"r{n}" for n in range(20)]
    for key in keys:
        await a.call("Counter", key, "where")
    b = cluster.add("b")
    key = next(k for k in keys if ring_owner(b, k) == "b")
    before = cluster.entry("Counter", key)
    response = await b.request("Counter", key, "where")
    assert (decode_result(response.result_json), response.silo_id) == ("a", "a")
    assert [(sent.address, sent.request.hops) for sent in b.peers.sent] == [(a.address, 1)]
    assert cluster.entry("Counter", key) == before
    assert b.catalog.get(GrainId("Counter", key)) is None


async def test_a_silo_that_rejoins_takes_its_grains_back(cluster: InProcessCluster) -> None:
    a = cluster.add("a")
    assert (await a.call("Counter", "k", "add", 1))["n"] == 1
    old = cluster.entry("Counter", "k")
    a.fence()
    a.membership.rejoin()  # a new incarnation; the entry still names the old one
    a.follow()
    assert await a.call("Counter", "k", "add", 1) == {"n": 2, "silo": "a"}
    entry = cluster.entry("Counter", "k")
    assert old is not None and entry is not None
    assert entry.incarnation == a.membership.incarnation != old.incarnation


async def test_a_grain_of_a_dead_incarnation_is_taken_over(cluster: InProcessCluster) -> None:
    a = cluster.add("a")
    assert (await a.call("Counter", "k", "add", 5))["n"] == 5
    first = cluster.entry("Counter", "k")
    b = cluster.add("b")
    a.kill()
    cluster.settle()
    assert await b.call("Counter", "k", "add", 1) == {"n": 6, "silo": "b"}  # state carried over
    entry = cluster.entry("Counter", "k")
    assert first is not None and entry is not None
    assert entry.incarnation == b.membership.incarnation
    assert entry.activation != first.activation


async def test_an_unreachable_owner_is_found_dead_and_its_grain_taken_over(
    cluster: InProcessCluster,
) -> None:
    """b still believes a alive: the forward fails (connection refused), b re-reads the
    membership, learns a is dead and takes the grain over; the caller sees one success."""
    a, b = cluster.add("a"), cluster.add("b")
    key = cluster.key_owned_by(a, "Counter")
    assert await b.call("Counter", key, "add", 5) == {"n": 5, "silo": "a"}
    a.kill()  # b has not read the member table since
    assert b.membership.is_alive(a.membership.incarnation) is True
    assert await b.call("Counter", key, "add", 1) == {"n": 6, "silo": "b"}
    assert [sent.address for sent in b.peers.sent] == [a.address, a.address]
    entry = cluster.entry("Counter", key)
    assert entry is not None and entry.incarnation == b.membership.incarnation


async def test_a_call_that_finds_the_grain_deactivating_waits_for_the_next_activation(
    cluster: InProcessCluster,
) -> None:
    a = cluster.add("a")
    await a.call("Counter", "k", "add", 1)
    activation = a.catalog.get(GrainId("Counter", "k"))
    assert activation is not None
    Hooks.deactivate_gate = asyncio.Event()
    activation.deactivate("test")
    await until(lambda: events("deactivate:test"), "on_deactivate started")
    late = asyncio.ensure_future(a.call("Counter", "k", "add", 1))
    await until(lambda: a.dispatcher.in_flight == 1, "the late call reached the dispatcher")
    assert not late.done() and len(events("activate")) == 1  # no second copy meanwhile
    Hooks.deactivate_gate.set()
    assert await late == {"n": 2, "silo": "a"}
    assert [event for event, _, _ in JOURNAL] == ["activate", "deactivate:test", "activate"]


async def test_a_call_waiting_when_its_silo_fences_never_registers_the_grain(
    cluster: InProcessCluster,
) -> None:
    """A call waits for a deactivation; the silo's lease lapses meanwhile (before the catalog
    hears of it). When the call resolves again it must not register the grain or run
    on_activate on the fenced silo: it is refused, retry-safe, and nothing touches Redis."""
    a = cluster.add("a")
    await a.call("Counter", "k", "add", 1)
    activation = a.catalog.get(GrainId("Counter", "k"))
    assert activation is not None
    Hooks.deactivate_gate = asyncio.Event()
    activation.deactivate("test")
    await until(lambda: events("deactivate:test"), "on_deactivate started")
    late = asyncio.ensure_future(a.call("Counter", "k", "add", 1))
    await until(lambda: a.dispatcher.in_flight == 1, "the late call reached the dispatcher")
    a.membership.fence()  # the lease lapsed; abandon_all has not run yet
    registers_before = [op for op in cluster.ops_for("Counter", "k") if op.operation == "register"]
    Hooks.deactivate_gate.set()
    with pytest.raises(SiloUnavailableError) as refused:
        await late
    assert refused.value.retry_safe
    registers = [op for op in cluster.ops_for("Counter", "k") if op.operation == "register"]
    assert registers == registers_before
    assert len(events("activate")) == 1


async def test_callers_handed_an_activation_that_is_going_away_are_redispatched(
    cluster: InProcessCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Redispatch path: the shared resolution returns an activation, and before its
    waiting callers resume, the activation starts deactivating. Each caller's call is then
    refused by the mailbox (Redispatch), waits for the old activation to go, and is served
    by the next one."""
    a = cluster.add("a")
    loop = asyncio.get_running_loop()
    grain = GrainId("Counter", "k")
    activations: list[int] = []

    def deactivate_right_after_activation(instance: Counter) -> None:
        activations.append(instance.serial)
        if len(activations) == 1:  # runs before the resolution's waiters resume
            loop.call_soon(lambda: _deactivate(a.catalog.get(grain)))

    refused: list[str] = []
    real_call = Activation.call

    def spy(self: Activation, method: MethodSpec, call: Any) -> asyncio.Future[Any]:
        try:
            return real_call(self, method, call)
        except Redispatch:
            refused.append(method.name)
            raise

    monkeypatch.setattr(Activation, "call", spy)
    Hooks.on_activated = deactivate_right_after_activation
    served = await asyncio.gather(*(a.call("Counter", "k", "activation") for _ in range(5)))
    assert len(activations) == 2 and served == [activations[1]] * 5  # all by the second one
    assert refused == ["activation"] * 5
    assert [event for event, _, _ in JOURNAL] == ["activate", "deactivate:test", "activate"]


def _deactivate(activation: Activation | None) -> None:
    assert activation is not None
    activation.deactivate("test")


async def test_idle_grains_are_deactivated_and_leave_the_directory(
    cluster: InProcessCluster,
) -> None:
    a = cluster.add("a")
    await a.call("Counter", "k", "add", 1)
    await a.call("Counter", "j", "where")
    assert set(cluster.store.entries) == {GrainId("Counter", "k"), GrainId("Counter", "j")}
    assert a.catalog.collect_idle() == 2
    await until(lambda: len(a.catalog) == 0, "both grains deactivated")
    assert sorted(events("deactivate:idle")) == [
        ("deactivate:idle", "a", "j"), ("deactivate:idle", "a", "k")]
    assert cluster.store.entries == {}
    assert set(cluster.store.states) == {GrainId("Counter", "k")}  # state outlives activations
    assert (await a.call("Counter", "k", "add", 1))["n"] == 2


async def test_a_busy_grain_is_not_collected(cluster: InProcessCluster) -> None:
    a = cluster.add("a")
    Hooks.turn_gate = asyncio.Event()
    busy = asyncio.ensure_future(a.call("Counter", "k", "hold"))
    await until(lambda: a.catalog.get(GrainId("Counter", "k")), "the grain activated")
    assert a.catalog.collect_idle() == 0
    Hooks.turn_gate.set()
    assert await busy == "held"
    assert a.catalog.collect_idle() == 1


async def test_the_sweeper_removes_the_entries_of_a_dead_silo(
    cluster: InProcessCluster,
) -> None:
    a, b = cluster.add("a"), cluster.add("b")
    keys = [cluster.key_owned_by(a, "Counter", f"s{i}-") for i in range(3)]
    for key in keys:
        await a.call("Counter", key, "where")
    mine = cluster.key_owned_by(b, "Counter")
    await b.call("Counter", mine, "where")
    a.kill()
    sweeper = DirectorySweeper(b.directory, b.membership, interval=60.0)
    assert await sweeper.sweep_once() == 0  # b's view still has a alive: nothing to sweep
    cluster.settle()
    assert await sweeper.sweep_once() == 3
    assert set(cluster.store.entries) == {GrainId("Counter", mine)}


def lookups(cluster: InProcessCluster, silo: InProcessSilo, key: str) -> int:
    return sum(1 for op in cluster.ops_for("Counter", key)
               if op.operation == "lookup" and op.silo_id == silo.silo_id)


async def test_a_silo_remembers_where_another_silo_hosts_a_grain(
    cluster: InProcessCluster,
) -> None:
    """Forwarding the same grain again costs no directory lookup (stream deliveries and
    reminder ticks forward every call); a view change forgets what was remembered."""
    a, b = cluster.add("a"), cluster.add("b")
    key = cluster.key_owned_by(b, "Counter")
    for expected in (1, 2, 3):
        assert (await a.call("Counter", key, "add", 1))["n"] == expected
    assert lookups(cluster, a, key) == 1
    assert [sent.address for sent in a.peers.sent] == [b.address] * 3
    cluster.add("c")  # a new view: what a remembered is not trusted under it
    assert (await a.call("Counter", key, "add", 1))["silo"] in ("b", "c")
    assert lookups(cluster, a, key) == 2


async def test_a_remembered_location_that_went_stale_still_reaches_the_one_activation(
    cluster: InProcessCluster,
) -> None:
    """The grain left the silo a remembers (deactivated there, then activated on a by a
    direct call): a's next call is forwarded to the old silo, which resolves it again, and
    the grain still has exactly one activation."""
    a, b = cluster.add("a"), cluster.add("b")
    key = cluster.key_owned_by(b, "Counter")
    assert (await a.call("Counter", key, "add", 1))["silo"] == "b"
    activation = b.catalog.get(GrainId("Counter", key))
    assert activation is not None
    activation.deactivate("test")
    await activation.wait_gone()
    # Activated on a behind a's back: b's directory entry is gone, a registers itself.
    request = pb.InvokeRequest(grain_type="Counter", grain_key=key, method="add",
                               args_json="[1]", hops=1)
    moved = await a.dispatcher.invoke(request, 5.0)
    assert decode_result(moved.result_json)["silo"] == "a"
    result = await b.call("Counter", key, "add", 1)  # b forwards to the live one
    assert result == {"n": 3, "silo": "a"}
    entry = cluster.entry("Counter", key)
    assert entry is not None and entry.incarnation == a.membership.incarnation
    assert b.catalog.get(GrainId("Counter", key)) is None
