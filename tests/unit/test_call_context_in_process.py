"""Call context and deadlock detection in-process (issue 10, items 1 and 3): the real
dispatchers, catalogs and grain-to-grain SDK of one or two silos over the twins.

What is proven here: a cycle in the call chain of a non-reentrant grain fails at once as
``deadlock`` naming the cycle, also when the cycle crosses silos (the chain travels with
forwarded calls); grains that let their chain back in are let through; the request context
reaches every hop, merged with what a grain sets; a grain's mailbox does not inherit the
request context of the call that happened to start it; the bounds are checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from grainery import request_context
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.codec import decode_result, encode_args
from grainery.client.context import (
    MAX_CHAIN_LENGTH,
    MAX_CONTEXT_ENTRIES,
    call_metadata,
    check_context,
    current_request_context,
    parse_call_metadata,
)
from grainery.client.errors import DeadlockError, GrainError, InnerCallError, InvalidContextError
from grainery.client.routing import GrainId
from grainery.silo.call import NO_CALL, call_context, cycle_of
from grainery.silo.grain import Grain
from grainery.silo.registry import GrainRegistry
from tests.eventually import eventually
from tests.grains.pipeline_context import ChainHop, Hop, ReentrantHop
from tests.inprocess import InProcessCluster, InProcessSilo


@pytest.fixture
async def cluster() -> AsyncIterator[InProcessCluster]:
    registry = GrainRegistry()
    for cls in (Hop, ChainHop, ReentrantHop, Gate):
        registry.register(cls)
    built = InProcessCluster(registry)
    yield built
    built.close()


async def go(silo: InProcessSilo, start: str, path: list[str], **meta: Any) -> Any:
    grain_type, _, key = start.partition("/")
    request = pb.InvokeRequest(grain_type=grain_type, grain_key=key, method="go",
                               args_json=encode_args([path]))
    response = await silo.dispatcher.invoke(request, 5.0, **meta)
    return decode_result(response.result_json)


# ----- deadlocks ---------------------------------------------------------------------------
async def test_a_b_a_cycle_is_a_deadlock_naming_the_cycle(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    with pytest.raises(DeadlockError) as caught:
        await go(silo, "Hop/a", ["Hop/b", "Hop/a"])
    assert "Hop/a -> Hop/b -> Hop/a" in caught.value.message
    # Nothing is left waiting: both grains answer at once.
    assert [hop["at"] for hop in await go(silo, "Hop/a", ["Hop/b"])] == ["Hop/a", "Hop/b"]


async def test_cycle_across_silos_is_a_deadlock(cluster: InProcessCluster) -> None:
    first, second = cluster.add("s1"), cluster.add("s2")
    a, b = cluster.key_owned_by(first, "Hop", "a"), cluster.key_owned_by(second, "Hop", "b")
    c = cluster.key_owned_by(second, "Hop", "c")
    with pytest.raises(DeadlockError) as caught:
        await go(first, f"Hop/{a}", [f"Hop/{b}", f"Hop/{c}", f"Hop/{a}"])
    assert f"Hop/{a} -> Hop/{b} -> Hop/{c} -> Hop/{a}" in caught.value.message
    # The calls to the other silo carried the chain.
    assert any(sent.chain == (f"Hop/{a}",) for sent in first.peers.sent)


async def test_inner_cycle_names_only_the_cycle(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    with pytest.raises(DeadlockError) as caught:
        await go(silo, "Hop/x", ["Hop/b", "Hop/c", "Hop/b"])
    assert "deadlock: Hop/b -> Hop/c -> Hop/b:" in caught.value.message


@pytest.mark.parametrize("target", ["ChainHop/a", "ReentrantHop/a"])
async def test_grains_that_let_their_chain_in_are_not_refused(
    cluster: InProcessCluster, target: str,
) -> None:
    """The dispatcher only decides deadlock vs let through; the mailbox runs what it lets
    through. The grain is idle here, so the let-through call simply runs."""
    silo = cluster.add("s1")
    seen = await go(silo, target, [], chain=("Hop/z", target))
    assert seen[0]["chain"] == ["Hop/z", target]
    with pytest.raises(DeadlockError):
        await go(silo, "Hop/a", [], chain=("Hop/z", "Hop/a"))


async def test_interleave_method_is_let_through(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    request = pb.InvokeRequest(grain_type="Hop", grain_key="a", method="peek",
                               args_json=encode_args([[]]))
    response = await silo.dispatcher.invoke(request, 5.0, chain=("Hop/a",))
    assert decode_result(response.result_json)[0]["chain"] == ["Hop/a"]


def test_cycle_of() -> None:
    assert cycle_of(("A/1", "B/2"), "A/1") == "A/1 -> B/2 -> A/1"
    assert cycle_of(("A/1", "B/2", "C/3"), "B/2") == "B/2 -> C/3 -> B/2"
    assert cycle_of(("A/1",), "B/2") is None


# ----- context -----------------------------------------------------------------------------
async def test_context_and_chain_reach_every_hop_across_silos(cluster: InProcessCluster) -> None:
    first, second = cluster.add("s1"), cluster.add("s2")
    a, b = cluster.key_owned_by(first, "Hop", "a"), cluster.key_owned_by(second, "Hop", "b")
    c = cluster.key_owned_by(first, "Hop", "c")
    seen = await go(first, f"Hop/{a}", [f"Hop/{b}", f"Hop/{c}"], context={"tenant": "acme"})
    assert [hop["values"] for hop in seen] == [{"tenant": "acme"}] * 3
    assert [hop["chain"] for hop in seen] == [[], [f"Hop/{a}"], [f"Hop/{a}", f"Hop/{b}"]]
    assert [hop["silo"] for hop in seen] == ["s1", "s2", "s1"]
    deadlines = [hop["deadline"] for hop in seen]
    assert deadlines == sorted(deadlines, reverse=True) and deadlines[0] <= 5.0
    assert all(sent.timeout <= 5.0 for sent in first.peers.sent + second.peers.sent)


async def test_context_set_inside_a_grain_is_merged(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    request = pb.InvokeRequest(grain_type="Hop", grain_key="m", method="go_with",
                               args_json=encode_args([{"step": "2", "tenant": "beta"},
                                                      ["Hop/n"]]))
    response = await silo.dispatcher.invoke(request, 5.0, {"tenant": "acme", "user": "u1"})
    seen = decode_result(response.result_json)
    assert seen[0]["values"] == {"tenant": "acme", "user": "u1"}
    assert seen[1]["values"] == {"tenant": "beta", "user": "u1", "step": "2"}


class Gate(Grain):
    """Holds its turn until the test opens the gate."""

    opened: asyncio.Event
    waiting: asyncio.Event

    async def go(self, path: list[str]) -> list[dict[str, Any]]:
        Gate.waiting.set()
        await Gate.opened.wait()
        return []


async def test_a_mailbox_does_not_inherit_the_context_of_the_call_that_started_it(
    cluster: InProcessCluster,
) -> None:
    """Hop/first sets step=2 around its local call to Hop/second, whose mailbox task starts
    inside that call and is still draining when an outside call (no context) queues behind
    it: that call's own grain call must carry no step=2."""
    Gate.opened, Gate.waiting = asyncio.Event(), asyncio.Event()
    silo = cluster.add("s1")
    request = pb.InvokeRequest(grain_type="Hop", grain_key="first", method="go_with",
                               args_json=encode_args([{"step": "2"}, ["Hop/second", "Gate/g"]]))
    held = asyncio.ensure_future(silo.dispatcher.invoke(request, 5.0))
    await asyncio.wait_for(Gate.waiting.wait(), 5.0)
    queued = asyncio.ensure_future(go(silo, "Hop/second", ["Hop/third"]))
    second = silo.catalog.get(GrainId("Hop", "second"))
    assert second is not None

    async def queued_behind() -> bool:
        return second.queued == 1

    await eventually(queued_behind, 5.0, "the outside call queued behind Hop/second's turn")
    Gate.opened.set()
    await held
    seen = await queued
    assert [hop["values"] for hop in seen] == [{}, {}]


async def test_context_bounds_are_checked_by_the_dispatcher(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    too_many = {f"k{i}": "v" for i in range(MAX_CONTEXT_ENTRIES + 1)}
    for bad in (too_many, {"big": "x" * 5000}, {"Upper": "v"}, {"k": "caf\u00e9"}):
        with pytest.raises(InvalidContextError):
            await go(silo, "Hop/a", [], context=bad)
    long_chain = tuple(f"Hop/c{i}" for i in range(MAX_CHAIN_LENGTH + 1))
    with pytest.raises(InvalidContextError, match="call chain of 33"):
        await go(silo, "Hop/a", [], chain=long_chain)
    assert (await go(silo, "Hop/a", []))[0]["at"] == "Hop/a"


async def test_nesting_past_the_chain_limit_fails_clearly(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    path = [f"Hop/deep{i}" for i in range(MAX_CHAIN_LENGTH + 1)]
    with pytest.raises(Exception) as caught:
        await go(silo, "Hop/top", path)
    assert "invalid_context" in str(caught.value) and "call chain of 33" in str(caught.value)


def test_request_context_nests_and_checks_at_once() -> None:
    assert current_request_context() == {}
    with request_context(tenant="acme") as outer:
        assert outer == {"tenant": "acme"}
        with request_context({"x-id": "7"}, tenant="beta"):
            assert current_request_context() == {"tenant": "beta", "x-id": "7"}
        assert current_request_context() == {"tenant": "acme"}
        with pytest.raises(InvalidContextError, match="not allowed"), request_context(Bad="v"):
            pass
    assert current_request_context() == {}
    with pytest.raises(InvalidContextError, match="bytes"):
        check_context({f"k{i}": "v" * 4000 for i in range(3)})


def test_metadata_round_trip_and_malformed_chain() -> None:
    pairs = call_metadata({"tenant": "acme"}, ("A/1", "B/\u00e9,2"))
    assert parse_call_metadata([("authorization", "x"), *pairs]) == (
        {"tenant": "acme"}, ("A/1", "B/\u00e9,2"))
    with pytest.raises(InvalidContextError, match="JSON array"):
        parse_call_metadata([("grainery-chain", "A/1")])


def test_call_context_outside_a_call_is_empty() -> None:
    assert call_context() is NO_CALL and NO_CALL.deadline is None and not NO_CALL.values


def test_deeply_nested_inner_call_message_keeps_the_root_cause() -> None:
    error: GrainError = InvalidContextError("call chain of 33 grain calls exceeds the limit")
    error.origin = "Hop/deep32.go"
    for depth in range(31, -1, -1):
        error = InnerCallError.wrap(error)
        error.origin = f"Hop/{'k' * 40}{depth}.go"
    assert isinstance(error, InnerCallError) and error.inner_kind == "invalid_context"
    assert error.message.startswith(f"inner call to Hop/{'k' * 40}1.go failed (invalid_context)")
    assert error.message.endswith("call chain of 33 grain calls exceeds the limit")
    assert len(error.message) <= 2000
