"""Call context and deadlock detection with real silos (issue 10, items 1 and 3).

Cycles of non-reentrant grains fail as ``deadlock`` naming the cycle, on one silo and
across three; every test gives the call 20 s, so getting ``deadlock`` (not ``deadline``)
proves the cycle was refused rather than waited out. A request context set by the Python
client, or as ``grainery-ctx-*`` metadata by a raw gRPC caller, arrives three grain hops
later on another silo, and every hop sees less time left than the one before. Bad context
and chains are refused with ``invalid_context`` and the silo keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from grainery import request_context
from grainery.client import (
    DeadlockError,
    GrainClient,
    InnerCallError,
    InvalidContextError,
    SyncGrainClient,
)
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import running_cluster, unique

GRAINS = ["tests.grains.pipeline_context"]
GENEROUS = 20.0  # a cycle that is waited out, not refused, would end with `deadline`
# gRPC rounds a unary call's timeout up to its wire units (grpc-timeout header).
ROUNDING = 0.25


@pytest.fixture(scope="module")
def one_silo(store: TestStore) -> Iterator[TestCluster]:
    with running_cluster(TestCluster(store, GRAINS, size=1)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def three_silos(store: TestStore) -> Iterator[TestCluster]:
    with running_cluster(TestCluster(store, GRAINS, size=3)) as cluster:
        yield cluster


@pytest.fixture
async def client(one_silo: TestCluster) -> AsyncIterator[GrainClient]:
    async with one_silo.client() as connected:
        yield connected


@pytest.fixture
async def trio(three_silos: TestCluster) -> AsyncIterator[GrainClient]:
    await three_silos.wait_for_stable_membership(3)
    async with three_silos.client() as connected:
        await connected.wait_for_members(3)
        yield connected


async def hop_on(client: GrainClient, silo: str, prefix: str) -> str:
    """``Hop/<key>`` of a fresh grain whose activation lives on ``silo``."""
    while True:
        key = unique(prefix)
        if await client.get_grain("Hop", key).where(timeout=10) == silo:
            return f"Hop/{key}"


def key(path: str) -> str:
    return path.partition("/")[2]


async def assert_deadlock(client: GrainClient, start: str, path: list[str], cycle: str) -> None:
    with pytest.raises(DeadlockError) as caught:
        await client.get_grain("Hop", key(start)).go(path, timeout=GENEROUS)
    assert caught.value.kind == "deadlock" and not caught.value.retry_safe
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert cycle in caught.value.message, caught.value.message
    # Nothing waits on: every grain of the cycle answers at once.
    for grain in {start, *path}:
        assert (await client.get_grain("Hop", key(grain)).go([], timeout=5))[0]["at"] == grain


# ----- deadlocks ---------------------------------------------------------------------------
async def test_a_b_a_on_one_silo_is_a_deadlock(client: GrainClient) -> None:
    a, b = f"Hop/{unique('a')}", f"Hop/{unique('b')}"
    await assert_deadlock(client, a, [b, a], f"{a} -> {b} -> {a}")


async def test_a_b_a_across_silos_is_a_deadlock(
    trio: GrainClient, three_silos: TestCluster,
) -> None:
    first, second, _ = (silo.name for silo in three_silos.silos)
    a, b = await hop_on(trio, first, "xa"), await hop_on(trio, second, "xb")
    await assert_deadlock(trio, a, [b, a], f"{a} -> {b} -> {a}")


async def test_four_grain_cycle_across_silos_is_a_deadlock(
    trio: GrainClient, three_silos: TestCluster,
) -> None:
    first, second, third = (silo.name for silo in three_silos.silos)
    a, b = await hop_on(trio, first, "4a"), await hop_on(trio, second, "4b")
    c, d = await hop_on(trio, third, "4c"), await hop_on(trio, first, "4d")
    await assert_deadlock(trio, a, [b, c, d, a], f"{a} -> {b} -> {c} -> {d} -> {a}")


async def test_call_chain_reentrancy_lets_a_b_a_through_across_silos(
    trio: GrainClient, three_silos: TestCluster,
) -> None:
    """The same cycle into a grain with allow_call_chain_reentrancy (or reentrant = True)
    runs: the call comes back through its own chain and interleaves with the waiting turn."""
    first, second, _ = (silo.name for silo in three_silos.silos)
    for grain_type in ("ChainHop", "ReentrantHop"):
        while True:
            a = unique("ra")
            if await trio.get_grain(grain_type, a).where(timeout=10) == first:
                break
        b = await hop_on(trio, second, "rb")
        seen = await trio.get_grain(grain_type, a).go(
            [b, f"{grain_type}/{a}"], timeout=GENEROUS
        )
        assert [hop["at"] for hop in seen] == [f"{grain_type}/{a}", b, f"{grain_type}/{a}"]


async def test_a_one_way_call_into_its_own_chain_is_no_deadlock(client: GrainClient) -> None:
    notifier = client.get_grain("Notifier", unique("n"))
    assert await notifier.notify_self(timeout=GENEROUS) == "sent"

    async def noted() -> bool:
        return await notifier.notes(timeout=5) == ["from myself"]

    await eventually(noted, 10, "the one-way note ran")


# ----- context -----------------------------------------------------------------------------
async def three_hops(client: GrainClient, three_silos: TestCluster) -> tuple[str, list[str]]:
    """A path of four grains, each hop on another silo than the one before."""
    first, second, third = (silo.name for silo in three_silos.silos)
    return await hop_on(client, first, "c0"), [
        await hop_on(client, second, "c1"), await hop_on(client, third, "c2"),
        await hop_on(client, second, "c3"),
    ]


def assert_arrived(seen: list[dict[str, Any]], values: dict[str, str], start: str,
                   path: list[str]) -> None:
    assert [hop["at"] for hop in seen] == [start, *path]
    assert [hop["values"] for hop in seen] == [values] * 4
    assert seen[3]["chain"] == [start, *path[:2]]
    assert seen[3]["silo"] != seen[0]["silo"]
    # Each hop sees no more time than the one before, and less than the caller gave
    # (without propagation a hop would see the SDK's 30 s default). A silo's loop clock is
    # read once per loop iteration, and the time a frame spends on the wire is nobody's, so
    # hops served without delay may see exactly the same.
    deadlines = [hop["deadline"] for hop in seen]
    assert deadlines == sorted(deadlines, reverse=True), deadlines
    assert 0 < deadlines[-1] <= deadlines[0] <= GENEROUS + ROUNDING, deadlines


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "unary"])
async def test_python_context_arrives_three_hops_later_on_another_silo(
    trio: GrainClient, three_silos: TestCluster, streamed: bool,
) -> None:
    start, path = await three_hops(trio, three_silos)
    async with three_silos.client(streamed=streamed) as client:
        with request_context(tenant="acme"), request_context({"x-request-id": "r-1"}):
            seen = await client.get_grain("Hop", key(start)).go(path, timeout=GENEROUS)
    assert_arrived(seen, {"tenant": "acme", "x-request-id": "r-1"}, start, path)


def test_sync_client_carries_the_context(one_silo: TestCluster) -> None:
    with one_silo.sync_client() as client, request_context(tenant="sync"):
        seen = SyncGrainClient.get_grain(client, "Hop", unique("s")).go([])
    assert seen[0]["values"] == {"tenant": "sync"}


async def test_metadata_context_from_a_raw_grpc_caller_arrives_three_hops_later(
    trio: GrainClient, three_silos: TestCluster,
) -> None:
    start, path = await three_hops(trio, three_silos)
    reply = await raw_invoke(three_silos.silos[0].address, start, path,
                             [("grainery-ctx-tenant", "raw")])
    assert_arrived(json.loads(reply.result_json), {"tenant": "raw"}, start, path)


async def raw_invoke(address: str, start: str, path: list[str],
                     metadata: list[tuple[str, str]]) -> pb.InvokeResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        reply: pb.InvokeResponse = await pb_grpc.GatewayStub(channel).Invoke(
            pb.InvokeRequest(grain_type="Hop", grain_key=key(start), method="go",
                             args_json=json.dumps([path])),
            metadata=metadata, timeout=GENEROUS,
        )
    return reply


async def test_context_and_chain_travel_on_unary_silo_to_silo_calls(
    trio: GrainClient, three_silos: TestCluster,
) -> None:
    """Requests over 64 KiB go unary, not on the call stream: then metadata carries them,
    both when a silo forwards a client's call and when a grain calls a grain elsewhere."""
    first, second, _ = three_silos.silos
    padding = "p" * (80 * 1024)
    far = await hop_on(trio, second.name, "far")
    async with GrainClient(first.address, gateway_only=True) as gateway:
        with request_context(tenant="forwarded"):
            seen = await gateway.get_grain("Hop", key(far)).context_with(padding)
    assert (seen["silo"], seen["values"]) == (second.name, {"tenant": "forwarded"})
    near = await hop_on(trio, first.name, "near")
    with request_context(tenant="inner"):
        seen = await trio.get_grain("Hop", key(near)).relay_big(far, padding)
    assert (seen["silo"], seen["values"], seen["chain"]) == (
        second.name, {"tenant": "inner"}, [near])


# ----- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("metadata", [
    [("grainery-ctx-big", "x" * 5000)],
    [(f"grainery-ctx-k{i}", "v") for i in range(33)],
    [("grainery-chain", json.dumps([f"Hop/c{i}" for i in range(33)]))],
    [("grainery-chain", "not json")],
], ids=["oversized", "too-many", "chain-too-long", "chain-malformed"])
async def test_bad_context_metadata_is_invalid_context(
    one_silo: TestCluster, client: GrainClient, metadata: list[tuple[str, str]],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_invoke(one_silo.addresses[0], "Hop/bad", [], metadata)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert ("grainery-error", "invalid_context") in tuple(error.trailing_metadata() or ())
    # The silo keeps serving.
    assert (await client.get_grain("Hop", unique("ok")).go([]))[0]["values"] == {}


async def test_nesting_past_the_chain_limit_fails_clearly(client: GrainClient) -> None:
    path = [f"Hop/{unique(f'deep{i}')}" for i in range(33)]
    with pytest.raises(InnerCallError) as caught:
        await client.get_grain("Hop", unique("top")).go(path, timeout=GENEROUS)
    assert caught.value.inner_kind == "invalid_context"
    assert "call chain of 33" in caught.value.message


def test_python_client_refuses_a_bad_context_before_sending() -> None:
    with pytest.raises(InvalidContextError, match="not allowed"), request_context(Tenant="x"):
        pass
