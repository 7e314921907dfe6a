"""Reentrancy and one-way calls through real silos: turn logs kept by the probe grains
(tests/grains/pipeline_j.py) show which turns overlapped; one-way deliveries wait on a gate
the test opens only after every call was answered. In process: tests/unit/test_mailbox.py,
tests/unit/test_one_way_in_process.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from grainery.client import GrainClient
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import live_client, unique

GRAINS = ["tests.grains.pipeline_j"]


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    with TestCluster(store, GRAINS, size=2) as running:
        yield running


@pytest.fixture
async def client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    async with live_client(cluster) as connected:
        yield connected


# ----- reentrancy -------------------------------------------------------------------
async def test_100_slow_calls_to_a_reentrant_grain_overlap(client: GrainClient) -> None:
    grain = client.get_grain("ReentrantTurns", unique("reentrant"))
    results = await asyncio.gather(*(grain.slow(i, 100, timeout=30) for i in range(100)))
    assert sorted(results) == list(range(100))
    report = await grain.report()
    assert report["turns"] == 100
    assert report["most_at_once"] == 100, report  # every call was in progress at once


async def test_a_plain_grain_never_overlaps(client: GrainClient) -> None:
    grain = client.get_grain("PlainTurns", unique("plain"))
    results = await asyncio.gather(*(grain.slow(i, 0.005, timeout=30) for i in range(100)))
    assert sorted(results) == list(range(100))
    report = await grain.report()
    assert report["turns"] == 100 and report["most_at_once"] == 1, report


async def test_read_only_calls_overlap_each_other_and_never_a_writer(
    client: GrainClient,
) -> None:
    grain = client.get_grain("ReadWrite", unique("rw"))
    calls = [
        grain.poke(i, 0.02, timeout=30) if i % 10 == 9 else grain.peek(i, 0.05, timeout=30)
        for i in range(100)
    ]
    assert sorted(await asyncio.gather(*calls)) == list(range(100))
    report = await grain.report()
    assert report["turns"] == 100, report
    assert report["most_readers_at_once"] > 1, report
    assert report["writer_overlaps"] == 0, report


# ----- one-way calls ------------------------------------------------------------------
async def test_1000_one_way_calls_return_before_they_run_then_run_in_order(
    client: GrainClient,
) -> None:
    grain = client.get_grain("Mailbox", unique("mailbox"))
    assert await grain.progress() == []  # activated: later calls queue on it in order
    # Started in order from one task: each is queued on the call stream before the next
    # starts, and the silo queues them on the grain in the order they arrive.
    calls = [asyncio.ensure_future(grain.deliver(i, timeout=30)) for i in range(1000)]
    assert await asyncio.gather(*calls) == [None] * 1000
    assert await grain.progress() == []  # every call answered; none has run
    await grain.open_gate()

    async def all_delivered() -> bool:
        return len(await grain.progress()) == 1000

    await eventually(all_delivered, 30, "all 1000 one-way calls ran")
    assert await grain.progress() == list(range(1000))


async def test_a_one_way_call_is_answered_by_the_owner_when_forwarded(
    cluster: TestCluster, client: GrainClient,
) -> None:
    entry, other = cluster.silos
    async with grpc.aio.insecure_channel(entry.address) as channel:
        gateway = pb_grpc.GatewayStub(channel)
        forwarded, local = [], []
        for n in range(40):
            key = unique(f"forwarded{n}")
            reply = await gateway.Invoke(pb.InvokeRequest(
                grain_type="Mailbox", grain_key=key, method="deliver", args_json="[1]",
            ), timeout=10)
            assert reply.result_json == "null"
            (forwarded if reply.silo_id == other.name else local).append(key)
    for key in local:  # their deliveries wait on the gate: a waiting turn holds up a stop
        await client.get_grain("Mailbox", key).open_gate()
    assert forwarded, "no key was owned by the other silo"
    for key in forwarded:
        assert await client.get_grain("Mailbox", key).progress() == []
        await client.get_grain("Mailbox", key).open_gate()

        async def delivered(key: str = key) -> bool:
            return bool(await client.get_grain("Mailbox", key).progress() == [1])

        await eventually(delivered, 10, f"the one-way call to Mailbox/{key} ran")


async def test_a_failing_one_way_call_is_logged_and_counted(
    cluster: TestCluster, client: GrainClient,
) -> None:
    key = unique("explodes")
    grain = client.get_grain("Mailbox", key)
    assert await grain.explode("kaboom") is None
    sample = 'grainery_one_way_failures_total{grain_type="Mailbox",method="explode"}'

    async def counted() -> bool:
        return sum(silo.scrape().get(sample, 0.0) for silo in cluster.silos) == 1

    await eventually(counted, 10, "the one-way failure counted in /metrics")
    logged = f"one-way call Mailbox/{key}.explode failed after it was answered: " \
        "ValueError: kaboom"
    assert any(logged in silo.log_path.read_text(errors="replace") for silo in cluster.silos)
