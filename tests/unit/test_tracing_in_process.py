"""Tracing on the real call path, in-process: the spans of a forwarded call to a grain that
calls a grain on a third silo, sampling (ratio 0, a caller's decision followed both ways),
what is recorded (no keys, no arguments unless asked), and tracing off recording nothing.
The dispatchers, activations and grain clients are the runtime's own (tests/inprocess.py);
spans go to the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.codec import encode_args
from grainery.client.routing import GrainId
from grainery.client.tracing import CallTracer
from grainery.silo import tracing
from grainery.silo.grain import Grain
from grainery.silo.metrics import SiloMetrics
from grainery.silo.reminders.model import ReminderTick, member_of
from grainery.silo.reminders.service import ReminderService
from tests.eventually import until
from tests.inprocess import ClusterFactory, InProcessCluster, InProcessSilo
from tests.spans import from_sdk, tree
from tests.unit.test_reminder_service import FakeStore, tick


class Front(Grain):
    async def relay(self, key: str) -> str:
        return str(await self.get_grain("Back", key).where())


class Back(Grain):
    gate: asyncio.Event | None = None  # set by a test: hold() waits for it

    async def where(self) -> str:
        return self.silo_id

    async def hold(self) -> str:
        assert Back.gate is not None
        await Back.gate.wait()
        return "held"

    async def step(self) -> str:
        """What a feature (a reminder tick, a durable step) does inside a turn."""
        with tracing.span("grainery.test.step", attributes={"n": 1}):
            return self.silo_id

    async def receive_reminder(self, name: str, tick: ReminderTick) -> None:
        self.ticked = name


Build = Callable[..., InProcessCluster]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    make = ClusterFactory(Front, Back)
    yield make
    make.close()


@pytest.fixture(autouse=True)
def tracing_reset() -> Iterator[None]:
    yield
    tracing.install(None)  # process-wide: no other test may inherit it


def instrument(
    cluster: InProcessCluster, ratio: float = 1.0, grain_keys: bool = False,
    arguments: bool = False,
) -> InMemorySpanExporter:
    """Turn tracing on in every silo of ``cluster`` as ``grainery silo --otlp-endpoint``
    would, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for silo in cluster.silos.values():
        tracer = CallTracer(provider, silo_id=silo.silo_id, roots=ratio > 0,
                            grain_keys=grain_keys, arguments=arguments)
        silo.dispatcher.tracer = tracer
        silo.grain_client.tracer = tracer
        tracing.install(tracer)
    return exporter


def three_silos(build: Build) -> tuple[InProcessCluster, InProcessSilo, str, str]:
    """Silos a, b, c; a Front key owned by b and a Back key owned by c."""
    cluster = build()
    a, b, c = cluster.add("a"), cluster.add("b"), cluster.add("c")
    return cluster, a, cluster.key_owned_by(b, "Front"), cluster.key_owned_by(c, "Back")


def remote_parent(sampled: bool) -> object:
    """The context a caller's ``traceparent`` gives (what a servicer extracts)."""
    context = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


async def test_one_trace_through_a_forward_and_a_grain_to_grain_call(build: Build) -> None:
    cluster, a, front, back = three_silos(build)
    exporter = instrument(cluster)
    assert await a.call("Front", front, "relay", back) == "c"
    spans = from_sdk(exporter.get_finished_spans())
    assert len({s.trace_id for s in spans}) == 1, "one trace"
    (root,) = [s for s in spans if not s.parent_id]
    assert tree(spans, root) == ("Front/relay server@a", (
        ("grainery.forward client@a", (
            ("Front/relay server@b", (
                ("grainery.activate internal@c", ()),  # the last tracer installed
                ("grainery.turn internal", (
                    ("Back/where client@b", (
                        ("Back/where server@c", (
                            ("grainery.activate internal@c", ()),
                            ("grainery.turn internal", ()),
                        )),
                    )),
                )),
            )),
        )),
    ))
    server = next(s for s in spans if s.name == "Front/relay" and s.silo == "b")
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "Front"
    assert server.attributes["rpc.method"] == "relay"
    assert server.attributes["rpc.grpc.status_code"] == 0
    # Keys and argument values can be user data: not recorded unless asked for.
    assert not any("grainery.grain_key" in s.attributes or "grainery.args" in s.attributes
                   for s in spans)


async def test_keys_and_arguments_are_recorded_only_when_enabled(build: Build) -> None:
    cluster = build()
    a = cluster.add("a")
    exporter = instrument(cluster, grain_keys=True, arguments=True)
    await a.call("Back", "secret-key", "where")
    server = next(s for s in from_sdk(exporter.get_finished_spans()) if s.kind == "server")
    assert server.attributes["grainery.grain_key"] == "secret-key"
    assert server.attributes["grainery.args"] == "[]"


async def test_ratio_zero_makes_no_span_and_carries_no_trace(build: Build) -> None:
    cluster, a, front, back = three_silos(build)
    exporter = instrument(cluster, ratio=0.0)
    assert await a.call("Front", front, "relay", back) == "c"
    assert exporter.get_finished_spans() == ()
    activation = cluster.silos["b"].catalog.get(GrainId("Front", front))
    assert activation is not None


async def test_a_sampled_caller_is_followed_even_at_ratio_zero(build: Build) -> None:
    cluster, a, front, back = three_silos(build)
    exporter = instrument(cluster, ratio=0.0)
    await a.dispatcher.invoke(  # the gateway's path: a traceparent read from the wire
        pb.InvokeRequest(grain_type="Front", grain_key=front, method="relay",
                         args_json=encode_args([back])),
        5.0, trace=remote_parent(sampled=True),  # type: ignore[arg-type]
    )
    spans = from_sdk(exporter.get_finished_spans())
    assert {s.trace_id for s in spans} == {"0af7651916cd43dd8448eb211c80319c"}
    (entry,) = [s for s in spans if s.parent_id == "b7ad6b7169203331"]
    assert (entry.name, entry.kind, entry.silo) == ("Front/relay", "server", "a")
    assert {(s.name, s.silo) for s in spans if s.kind == "server"} == {
        ("Front/relay", "a"), ("Front/relay", "b"), ("Back/where", "c"),
    }


async def test_a_sampled_out_caller_is_followed_on_every_hop(build: Build) -> None:
    """Ratio 1 everywhere, but the caller decided not to sample: no silo records a span,
    not even b and c, which would start traces of their own were the decision lost."""
    cluster, a, front, back = three_silos(build)
    exporter = instrument(cluster, ratio=1.0)
    await a.dispatcher.invoke(
        pb.InvokeRequest(grain_type="Front", grain_key=front, method="relay",
                         args_json=encode_args([back])),
        5.0, trace=remote_parent(sampled=False),  # type: ignore[arg-type]
    )
    assert exporter.get_finished_spans() == ()


async def test_tracing_off_records_nothing_even_with_a_traceparent(build: Build) -> None:
    cluster, a, front, back = three_silos(build)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await a.dispatcher.invoke(
        pb.InvokeRequest(grain_type="Front", grain_key=front, method="relay",
                         args_json=encode_args([back])),
        5.0, trace=remote_parent(sampled=True),  # type: ignore[arg-type]
    )
    assert exporter.get_finished_spans() == ()
    assert all(s.dispatcher.tracer is None for s in cluster.silos.values())


async def test_a_failing_call_marks_its_spans_with_the_error_kind_only(build: Build) -> None:
    cluster = build()
    a = cluster.add("a")
    exporter = instrument(cluster)
    with pytest.raises(Exception, match="no callable method"):
        await a.call("Back", "k", "nope")
    (server,) = from_sdk(exporter.get_finished_spans())
    assert server.attributes["grainery.error_kind"] == "unknown_method"
    assert server.attributes["rpc.grpc.status_code"] == 12  # UNIMPLEMENTED


async def test_a_features_span_inside_a_turn_is_the_turns_child(build: Build) -> None:
    cluster = build()
    a = cluster.add("a")
    exporter = instrument(cluster)
    assert await a.call("Back", "k", "step") == "a"
    spans = from_sdk(exporter.get_finished_spans())
    (root,) = [s for s in spans if not s.parent_id]
    assert tree(spans, root) == ("Back/step server@a", (
        ("grainery.activate internal@a", ()),
        ("grainery.turn internal", (("grainery.test.step internal@a", ()),)),
    ))


async def test_a_call_queued_behind_another_says_so_on_its_span(build: Build) -> None:
    cluster = build()
    a = cluster.add("a")
    exporter = instrument(cluster)
    Back.gate = asyncio.Event()
    busy = asyncio.ensure_future(a.call("Back", "q", "hold"))
    await until(lambda: (g := a.catalog.get(GrainId("Back", "q"))) is not None and g.running,
                "the holding turn started")
    queued = asyncio.ensure_future(a.call("Back", "q", "where"))
    await until(lambda: a.catalog.get(GrainId("Back", "q")).queued == 1,  # type: ignore[union-attr]
                "the second call queued")
    Back.gate.set()
    assert await busy == "held" and await queued == "a"
    spans = exporter.get_finished_spans()
    where = next(s for s in spans if s.name == "Back/where")
    hold = next(s for s in spans if s.name == "Back/hold")
    assert [(e.name, dict(e.attributes or {})) for e in where.events] == [
        ("grainery.queued", {"grainery.queued_ahead": 0, "grainery.turns_running": 1})
    ]
    assert not hold.events  # it started at once


async def test_a_reminder_tick_is_a_span_around_the_hooks_dispatch_on_the_grains_owner(
    build: Build,
) -> None:
    cluster = build()
    a, _ = cluster.add("a"), cluster.add("b")
    exporter = instrument(cluster)
    store = FakeStore()
    service = ReminderService(store, a.membership, a.system_calls,  # type: ignore[arg-type]
                              SiloMetrics(), poll_interval=0.01)
    service.membership_changed()
    # A grain b hosts whose reminder partition a serves: the tick is forwarded.
    key = next(
        k for k in (f"k{n}" for n in range(10_000))
        if service.ownership.owns(service.ownership.partition_of(f"Back/{k}"))
        and a.membership.ring.owner(GrainId("Back", k)).silo_id == "b"  # type: ignore[union-attr]
    )
    due = replace(tick(service, key, "daily"), member=member_of("Back", key, "daily"))
    partition = service.ownership.partition_of(f"Back/{key}")
    store.ready[partition], store.due = [due], [partition]
    service.start()
    try:
        await until(lambda: len(store.completed) == 1, "the tick delivered and completed")
    finally:
        await service.stop(1.0)
    assert store.completed[0][2] == "ok"
    spans = from_sdk(exporter.get_finished_spans())
    (root,) = [s for s in spans if not s.parent_id]
    assert root.attributes["grainery.reminder"] == "daily"
    # (In process the span API's tracer is the last silo's: one tracing silo per process.)
    assert tree(spans, root) == (f"grainery.reminder.tick internal@{root.silo}", (
        ("Back/receive_reminder server@a", (
            ("grainery.forward client@a", (
                ("Back/receive_reminder server@b", (
                    ("grainery.activate internal@b", ()),
                    ("grainery.turn internal", ()),
                )),
            )),
        )),
    ))
