"""Bounds and discoverability of the gRPC interface, against real silo processes.

One silo runs with deliberately small limits (calls in flight, queue per grain,
argument nesting, message size); each limit is hit and must answer with its
documented status and a clear message, after which the silo keeps serving.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import GRAINS, health_status, running_cluster, wait_health

MAX_IN_FLIGHT = 4
MAX_QUEUE = 2
MAX_NESTING = 8
MAX_MESSAGE = 64 * 1024
LIMIT_ARGS = [
    "--max-in-flight", str(MAX_IN_FLIGHT), "--max-queue-per-grain", str(MAX_QUEUE),
    "--max-nesting", str(MAX_NESTING), "--max-message-bytes", str(MAX_MESSAGE),
]


@pytest.fixture(scope="module")
def limited(store: TestStore) -> Iterator[SiloProcess]:
    with running_cluster(TestCluster(store, GRAINS, size=1, extra_args=LIMIT_ARGS)) as cluster:
        yield cluster.silos[0]


@pytest.fixture
async def channel(limited: SiloProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(limited.address) as opened:
        yield opened


def _request(grain_type: str, key: str, method: str, args_json: str = "[]") -> pb.InvokeRequest:
    return pb.InvokeRequest(grain_type=grain_type, grain_key=key, method=method,
                            args_json=args_json)


async def _invoke(channel: grpc.aio.Channel, grain_type: str, key: str, method: str,
                  args_json: str = "[]", timeout: float = 10.0) -> pb.InvokeResponse:
    reply: pb.InvokeResponse = await pb_grpc.GatewayStub(channel).Invoke(
        _request(grain_type, key, method, args_json), timeout=timeout)
    return reply


async def _stats(channel: grpc.aio.Channel) -> pb.SiloStatsResponse:
    reply: pb.SiloStatsResponse = await pb_grpc.ManagementStub(channel).SiloStats(
        pb.SiloStatsRequest(), timeout=2)
    return reply


async def _wait_in_flight(channel: grpc.aio.Channel, count: int, timeout: float = 5.0) -> None:
    async def reached() -> bool:
        return (await _stats(channel)).calls_in_flight == count

    await eventually(reached, timeout, f"{count} calls in flight")


async def _activations(channel: grpc.aio.Channel, grain_type: str) -> int:
    counts = {c.grain_type: c.activations for c in (await _stats(channel)).activations}
    return counts.get(grain_type, 0)


async def _wait_activated(channel: grpc.aio.Channel, grain_type: str, count: int) -> None:
    """Until ``count`` grains of the type are active: a call admitted to an active grain with
    an empty queue is running its turn (it is not still activating)."""
    async def reached() -> bool:
        return await _activations(channel, grain_type) == count

    await eventually(reached, 5.0, f"{count} {grain_type} activations")


def _trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: v for k, v in error.trailing_metadata() or () if isinstance(v, str)}


async def _still_serving(channel: grpc.aio.Channel) -> None:
    reply = await _invoke(channel, "Boom", "alive", "echo", '["still here"]')
    assert reply.result_json == '["still here"]'


# ----- bounded concurrency ---------------------------------------------------
async def test_max_in_flight_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    run = uuid.uuid4().hex[:8]
    holders = [asyncio.create_task(_invoke(channel, "Turns", f"hold-{run}-{i}", "sleep", "[1.5]"))
               for i in range(MAX_IN_FLIGHT)]
    await _wait_in_flight(channel, MAX_IN_FLIGHT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(channel, "Recorder", f"extra-{run}", "ping")
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"calls in flight (limit {MAX_IN_FLIGHT})" in (error.details() or "")
    assert _trailers(error) == {"grainery-error": "overloaded", "grainery-retry-safe": "1"}
    replies = await asyncio.gather(*holders)
    assert [r.result_json for r in replies] == ["1.5"] * MAX_IN_FLIGHT
    await _still_serving(channel)


async def test_max_queue_per_grain_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    key = f"queue-{uuid.uuid4().hex[:8]}"
    active = await _activations(channel, "Turns")
    running = asyncio.create_task(_invoke(channel, "Turns", key, "sleep", "[1.5]"))
    await _wait_in_flight(channel, 1)
    await _wait_activated(channel, "Turns", active + 1)  # running: the queue is empty
    queued = [asyncio.create_task(_invoke(channel, "Turns", key, "track", f"[{i}]"))
              for i in range(MAX_QUEUE)]
    await _wait_in_flight(channel, 1 + MAX_QUEUE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(channel, "Turns", key, "track", "[99]")
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"calls queued (limit {MAX_QUEUE})" in (error.details() or "")
    assert _trailers(error)["grainery-error"] == "overloaded"
    await running
    assert [int(r.result_json) for r in await asyncio.gather(*queued)] == list(range(MAX_QUEUE))
    report = await _invoke(channel, "Turns", key, "report")
    assert '"order":[0,1]' in report.result_json  # the refused call never ran


async def test_call_whose_deadline_passes_while_queued_is_not_run(
    channel: grpc.aio.Channel,
) -> None:
    key = f"deadline-{uuid.uuid4().hex[:8]}"
    active = await _activations(channel, "Turns")
    busy = asyncio.create_task(_invoke(channel, "Turns", key, "sleep", "[1.0]"))
    await _wait_in_flight(channel, 1)
    await _wait_activated(channel, "Turns", active + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(channel, "Turns", key, "track", "[1]", timeout=0.3)
    # The report below proves the silo honoured the deadline too: the queued call never ran.
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    after = asyncio.create_task(_invoke(channel, "Turns", key, "track", "[2]"))
    await busy
    await after
    report = await _invoke(channel, "Turns", key, "report")
    # Turns records every run of track(): only the call whose caller waited ran.
    assert '"order":[2]' in report.result_json, report.result_json


# ----- bounded input ---------------------------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_max_nesting_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    # The outer array of positional arguments counts as one level.
    ok = await _invoke(channel, "Boom", "nest", "echo", _nested(MAX_NESTING))
    assert ok.result_json == _nested(MAX_NESTING)  # echo returns its arguments as a list
    for depth in (MAX_NESTING + 1, 5000, 30_000):  # 60 kB: under the message limit
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _invoke(channel, "Boom", "nest", "echo", _nested(depth))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, depth
        assert _trailers(caught.value)["grainery-error"] == "invalid_arguments"
    await _still_serving(channel)


async def test_oversized_request_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    big = '["' + "x" * (MAX_MESSAGE + 1) + '"]'
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(channel, "Boom", "big", "echo", big)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (caught.value.details() or "")
    await _still_serving(channel)


async def test_oversized_result_is_refused_with_a_clear_message(
    channel: grpc.aio.Channel,
) -> None:
    fits = await _invoke(channel, "Boom", "big", "big", f"[{MAX_MESSAGE // 2}]")
    assert len(fits.result_json) == MAX_MESSAGE // 2 + 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(channel, "Boom", "big", "big", f"[{MAX_MESSAGE * 2}]")
    # The method ran (it is not retry safe), but its result is not sent.
    assert caught.value.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert f"limit {MAX_MESSAGE - 1024}" in (caught.value.details() or "")
    await _still_serving(channel)


async def test_oversized_key_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(channel, "Recorder", "k" * 5000, "ping")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key longer than" in (caught.value.details() or "")


# ----- discoverable ----------------------------------------------------------------
EXPECTED_SERVICES = {"grainery.v1.Gateway", "grainery.v1.Directory", "grainery.v1.Management",
                     "grpc.health.v1.Health"}


def test_reflection_lists_services_and_describes_messages(limited: SiloProcess) -> None:
    with grpc.insecure_channel(limited.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert services >= EXPECTED_SERVICES, services
        # A generic client (like grpcurl) can build and send a request from reflection alone.
        pool = descriptor_pool.DescriptorPool(database)
        gateway = pool.FindServiceByName("grainery.v1.Gateway")
        invoke = gateway.FindMethodByName("Invoke")
        request_class = message_factory.GetMessageClass(invoke.input_type)
        response_class = message_factory.GetMessageClass(invoke.output_type)
        call = channel.unary_unary(
            "/grainery.v1.Gateway/Invoke",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        reply = call(request_class(grain_type="Boom", grain_key="reflect", method="echo",
                                   args_json='[1, "two"]'), timeout=10)
        assert reply.result_json == '[1,"two"]'


# ----- health while draining, reflection off ---------------------------------------
async def test_reflection_off_and_health_not_serving_while_draining(store: TestStore) -> None:
    cluster = TestCluster(store, GRAINS, size=1, extra_args=["--reflection", "off"])
    with running_cluster(cluster):
        silo = cluster.silos[0]
        async with grpc.aio.insecure_channel(silo.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def list_services():  # type: ignore[no-untyped-def]
                # Nothing is ever written (a write racing the refusal is reported by grpcio
                # as INTERNAL): the refusal needs no request, and cancels this iterator.
                await asyncio.Event().wait()
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.ServerReflectionInfo(list_services(), timeout=5):
                    pass
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

            in_flight = asyncio.create_task(_invoke(channel, "Turns", "drain", "sleep", "[1.5]"))
            await _wait_in_flight(channel, 1)
            silo.signal(signal.SIGTERM)
            # While the call in flight finishes, the silo says NOT_SERVING and refuses
            # new calls as retry-safe UNAVAILABLE.
            await asyncio.to_thread(
                wait_health, silo.address, health_pb2.HealthCheckResponse.NOT_SERVING, 1.2)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _invoke(channel, "Recorder", "late", "ping")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert _trailers(caught.value) == {"grainery-error": "unavailable",
                                               "grainery-retry-safe": "1"}
            assert (await in_flight).result_json == "1.5"
        assert silo.process is not None
        assert await asyncio.to_thread(silo.process.wait, 20) == 0


def test_health_serving_per_service(limited: SiloProcess) -> None:
    with grpc.insecure_channel(limited.address) as channel:
        for service in ("", *sorted(EXPECTED_SERVICES - {"grpc.health.v1.Health"})):
            assert health_status(channel, service) == health_pb2.HealthCheckResponse.SERVING
