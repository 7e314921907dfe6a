"""The multiplexed call stream (Gateway.InvokeStream) behaves exactly like unary Invoke."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from grainery.client import GrainClient, GrainError
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.testing import TestCluster, TestStore

CASES = [
    ("Recorder", "add", "[1]"),
    ("Nope", "add", "[1]"),
    ("Recorder", "_ctx", "[]"),
    ("Recorder", "add", "[1, 2]"),
    ("Recorder", "add", "[1"),
    ("Boom", "explode", '["kaput"]'),
    ("Boom", "unserialisable", "[]"),
    ("Flaky", "attempts_so_far", "[]"),
]


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    with TestCluster(store, ["tests.grains.probes"], size=1) as running:
        yield running


async def _outcome(client: GrainClient, grain_type: str, method: str, args: str,
                   key: str) -> tuple[str, str, str]:
    try:
        request = pb.InvokeRequest(grain_type=grain_type, grain_key=key, method=method,
                                   args_json=args)
        from grainery.client.routing import GrainId

        reply = await client.invoke_request(GrainId(grain_type, key), request, 10)
        return ("ok", reply.result_json, "")
    except GrainError as error:
        return (type(error).__name__, error.code.name, error.message)


async def test_stream_and_unary_give_the_same_outcomes(cluster: TestCluster) -> None:
    async with GrainClient(cluster.addresses, streamed=True) as streamed, \
            GrainClient(cluster.addresses, streamed=False) as unary:
        for index, (grain_type, method, args) in enumerate(CASES):
            via_stream = await _outcome(streamed, grain_type, method, args, f"s{index}")
            via_unary = await _outcome(unary, grain_type, method, args, f"u{index}")
            assert via_stream[:2] == via_unary[:2], (grain_type, method, via_stream, via_unary)
            assert via_stream[2].replace(f"s{index}", "K") == via_unary[2].replace(
                f"u{index}", "K"), (via_stream, via_unary)


async def test_raw_stream_many_calls_per_frame_answered_by_id(cluster: TestCluster) -> None:
    """A client in any language may use InvokeStream: frames of several calls, results
    matched by call_id, errors per call with the same kinds as unary trailers."""
    channel = grpc.aio.insecure_channel(cluster.addresses[0])
    stub = pb_grpc.GatewayStub(channel)

    async def frames() -> AsyncIterator[pb.InvokeFrame]:
        for batch in range(5):
            yield pb.InvokeFrame(calls=[
                pb.StreamCall(call_id=batch * 100 + i, timeout=10, request=pb.InvokeRequest(
                    grain_type="Recorder", grain_key=f"raw-{i}", method="add", args_json="[1]"))
                for i in range(20)
            ] + [pb.StreamCall(call_id=batch * 100 + 99, request=pb.InvokeRequest(
                grain_type="Recorder", grain_key="raw", method="nope"))])

    results: dict[int, pb.StreamResult] = {}
    try:
        async for frame in stub.InvokeStream(frames()):
            for result in frame.results:
                assert result.call_id not in results, "a call answered twice"
                results[result.call_id] = result
    finally:
        await channel.close()
    assert len(results) == 5 * 21
    for i in range(20):
        values = sorted(int(results[b * 100 + i].response.result_json) for b in range(5))
        assert values == [1, 2, 3, 4, 5], (i, values)
    failure = results[99]
    assert failure.status_code == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert failure.error_kind == "unknown_method" and not failure.retry_safe


async def test_concurrent_calls_on_one_stream_keep_turn_order(cluster: TestCluster) -> None:
    async with GrainClient(cluster.addresses) as client:
        grain = client.get_grain("Turns", "stream-order")
        await asyncio.gather(*(grain.track(i, 0) for i in range(300)))
        report = await grain.report()
    assert report["overlaps"] == 0
    assert report["order"] == list(range(300))


async def test_large_requests_bypass_the_stream(cluster: TestCluster) -> None:
    async with GrainClient(cluster.addresses) as client:
        big = "x" * 200_000
        echoed = await client.get_grain("Boom", "big").echo(big)
    assert echoed == [big]
