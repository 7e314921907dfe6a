"""Traces across real silo processes: three silos export over OTLP/gRPC (``--otlp-endpoint``)
to a receiver this test runs; the Python client records its own spans in memory.

- a call from the Python client, through a forward, to a grain that calls a grain on a
  third silo, is ONE trace with the expected parent/child spans on each silo (the client's
  call stream, the silos' forwarding stream and grain-to-grain stream all carry it);
- a Node.js caller's ``traceparent`` metadata (unary Invoke) joins its trace;
- the silos' spans name their silo and carry no grain key and no argument values;
- a stream delivery is a consumer span around the subscriber's hook call and its turn.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grainery.client import GrainClient
from grainery.client.routing import GrainId
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually, eventually_sync
from tests.integration.helpers import GRAINS, running_cluster
from tests.integration.node_tests import node_or_skip, run_node_tests
from tests.integration.otlp_receiver import OtlpReceiver
from tests.spans import SpanRecord, from_sdk, tree


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def cluster(store: TestStore, receiver: OtlpReceiver) -> Iterator[TestCluster]:
    # A short batch delay so spans reach the receiver within a moment of the call.
    silos = TestCluster(
        store, [*GRAINS, "tests.grains.calls", "tests.grains.stream_probes"], size=3,
        extra_args=["--otlp-endpoint", receiver.endpoint],
        env={"OTEL_BSP_SCHEDULE_DELAY": "50", "GRAINERY_TEST_STORE_URL": store.url},
    )
    with running_cluster(silos) as running:
        yield running


def key_owned_by(client: GrainClient, grain_type: str, address: str, prefix: str) -> str:
    for n in range(10_000):
        key = f"{prefix}{n}"
        if client.router.route(GrainId(grain_type, key)) == address:
            return key
    raise AssertionError(f"no {grain_type} key routes to {address}")


async def test_a_forwarded_call_through_three_silos_is_one_trace(
    cluster: TestCluster, receiver: OtlpReceiver
) -> None:
    a, b, c = cluster.silos
    names = {a.name: "A", b.name: "B", c.name: "C"}
    # Every silo's ring must agree with the client's: B places Recorder on C by its own view.
    await cluster.wait_for_stable_membership(3)
    async with cluster.client() as plain:
        await plain.wait_for_members(3)
        prefix = secrets.token_hex(4)
        relay_key = key_owned_by(plain, "Probe", b.address, f"relay-{prefix}-")
        recorder_key = key_owned_by(plain, "Recorder", c.address, f"rec-{prefix}-")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # gateway_only: the call goes to A, which does not own the grain and forwards it to B.
    async with GrainClient(a.address, gateway_only=True, tracer_provider=provider) as client:
        result = await client.get_grain("Probe", relay_key).relay(
            "Recorder", recorder_key, "add", 5
        )
    assert result == 5
    (client_span,) = from_sdk(exporter.get_finished_spans())
    expected = ("Probe/relay client", (
        ("Probe/relay server@A", (
            ("grainery.directory.lookup client@A", ()),
            ("grainery.forward client@A", (
                ("Probe/relay server@B", (
                    ("grainery.activate internal@B", ()),
                    ("grainery.directory.register client@B", ()),
                    ("grainery.turn internal", (
                        ("Recorder/add client@B", (
                            ("Recorder/add server@C", (
                                ("grainery.activate internal@C", ()),
                                ("grainery.directory.register client@C", ()),
                                ("grainery.turn internal", (
                                    ("grainery.state.write client@C", ()),
                                )),
                            )),
                        )),
                    )),
                )),
            )),
        )),
    ))

    async def whole_trace() -> list[SpanRecord]:
        spans = [client_span, *receiver.spans(client_span.trace_id)]
        assert tree(spans, client_span, names) == expected
        return spans

    spans = await eventually(whole_trace, 10.0, "the silos' spans of the call at the receiver")
    server = next(s for s in spans if s.name == "Recorder/add" and s.kind == "server")
    assert server.attributes["rpc.system"] == "grpc"
    assert (server.attributes["rpc.service"], server.attributes["rpc.method"]) == (
        "Recorder", "add"
    )
    assert server.attributes["grainery.grain_type"] == "Recorder"
    assert server.attributes["grainery.silo_id"] == c.name
    write = next(s for s in spans if s.name == "grainery.state.write")
    assert write.attributes["db.system.name"] == "redis" and "rpc.system" not in write.attributes
    # Keys and argument values may be user data: not recorded unless enabled.
    assert not [s for s in spans if "grainery.grain_key" in s.attributes
                or "grainery.args" in s.attributes]


def test_a_node_callers_traceparent_joins_its_trace(
    cluster: TestCluster, receiver: OtlpReceiver
) -> None:
    node = node_or_skip("the Node.js traceparent test")
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    env = {
        "GRAINERY_TRACEPARENT": f"00-{trace_id}-{parent_id}-01",
        "GRAINERY_TRACE_KEY": f"node-trace-{trace_id[:8]}",
    }
    result = run_node_tests(node, "client_test.mjs", cluster.silos[0].address, env,
                            name_pattern="traceparent", timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "# pass 1" in output, output

    def joined() -> list[SpanRecord]:
        return [s for s in receiver.spans(trace_id)
                if s.parent_id == parent_id and s.name == "Recorder/ping" and s.kind == "server"]

    (entry,) = eventually_sync(joined, 10.0, "the silo's span under the Node caller's span")
    assert entry.silo == cluster.silos[0].name


async def test_a_unary_python_call_carries_its_trace_in_the_metadata(
    cluster: TestCluster, receiver: OtlpReceiver
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    a = cluster.silos[0]
    async with GrainClient(a.address, gateway_only=True, streamed=False,
                           tracer_provider=provider) as client:
        await client.get_grain("Recorder", f"unary-{secrets.token_hex(4)}").ping()
    (client_span,) = from_sdk(exporter.get_finished_spans())

    async def served() -> list[SpanRecord]:
        return [s for s in receiver.spans(client_span.trace_id)
                if s.parent_id == client_span.span_id and s.kind == "server"]

    (server,) = await eventually(served, 10.0, "the silo's span under the client's")
    assert (server.name, server.silo) == ("Recorder/ping", a.name)


async def test_a_stream_delivery_is_a_span_around_the_subscribers_turn(
    cluster: TestCluster, receiver: OtlpReceiver
) -> None:
    key = f"traced-{secrets.token_hex(4)}"
    async with cluster.client() as client:
        token = await client.get_stream("orders", key).publish({"n": 1})

    def delivery() -> tuple[SpanRecord, list[SpanRecord]]:
        for span in receiver.spans():
            if (span.name == "grainery.stream.deliver"
                    and span.attributes.get("grainery.stream.first_token") == token):
                return span, receiver.spans(span.trace_id)
        raise AssertionError("no delivery span yet")

    async def check() -> tuple[SpanRecord, list[SpanRecord]]:
        span, trace = delivery()
        names = {s.name for s in trace}
        assert {"OrderWatcher/_deliver_stream_events", "grainery.turn"} <= names, names
        return span, trace

    span, trace = await eventually(check, 10.0, "the delivery's spans at the receiver")
    assert span.kind == "consumer" and not span.parent_id  # the pump starts the trace
    assert span.attributes["messaging.destination.name"] == "orders"
    assert span.attributes["messaging.batch.message_count"] == 1
    hook = next(s for s in trace if s.name == "OrderWatcher/_deliver_stream_events"
                and s.parent_id == span.span_id)
    assert hook.kind == "server"
    assert key not in str([s.attributes for s in trace])  # no grain key unless enabled
