"""Tracing's edges: off needs no OpenTelemetry, a missing extra is a one-line error naming the fix,
the flags are validated, trace context from the wire is read strictly (anything malformed
is dropped, never an error), and the span API other features use."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grainery.client.tracing import CallTracer, TracingUnavailableError
from grainery.silo import tracing
from grainery.silo.config import SiloConfig
from grainery.silo.startup_error import StartupError
from tests.spans import from_sdk

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_tracing_off_needs_no_opentelemetry() -> None:
    """A silo or client that does not trace works without the packages: run as if they
    were not installed (redis-py loads them itself when present, so "not imported" could
    not be asserted in this environment; "not needed" is the property that matters)."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None; "
        "import grainery, grainery.silo.runtime, grainery.silo.cli; "
        "from grainery.silo.config import SiloConfig; "
        "from grainery.silo.tracing import configure; "
        "assert configure(SiloConfig(grains=('m',)).tracing(), 's', 'c') is None; "
        "client = grainery.GrainClient('127.0.0.1:1'); "
        "assert client.tracer is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # noqa: S603


def test_a_missing_extra_is_a_one_line_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    options = SiloConfig(grains=("m",), otlp_endpoint="127.0.0.1:4317").tracing()
    with pytest.raises(StartupError) as refused:
        tracing.check_available(options)
    assert "grainery[tracing]" in refused.value.one_line()
    assert "\n" not in refused.value.one_line()
    tracing.check_available(SiloConfig(grains=("m",)).tracing())  # off: nothing is needed
    from grainery.client import GrainClient

    with pytest.raises(TracingUnavailableError, match=r"grainery\[tracing\]"):
        GrainClient("127.0.0.1:1", tracer_provider=TracerProvider())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("trace_sampling", 1.5, "between 0 and 1"),
    ("trace_sampling", -0.1, "between 0 and 1"),
    ("trace_grain_keys", "maybe", "--trace-grain-keys is on or off"),
    ("trace_arguments", "yes please", "--trace-arguments is on or off"),
])
def test_tracing_flags_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SiloConfig(grains=("m",), **{field: value})  # type: ignore[arg-type]


def test_tracing_flags_reach_the_options() -> None:
    options = SiloConfig(grains=("m",), otlp_endpoint="collector:4317", trace_sampling=0.25,
                         trace_grain_keys="on", trace_arguments="off").tracing()
    assert options == tracing.TracingOptions("collector:4317", 0.25, True, False)


def tracer() -> CallTracer:
    return CallTracer(TracerProvider(), silo_id="s1")


@pytest.mark.parametrize("carrier", [
    {},
    {"traceparent": ""},
    {"traceparent": "00-not-a-trace-context"},
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # invalid id
    {"traceparent": TRACEPARENT + "x" * 2000},
    {"tracestate": "a=1"},
])
def test_malformed_trace_context_from_the_wire_is_dropped(carrier: dict[str, str]) -> None:
    assert tracer().extract(carrier) is None


def test_trace_context_from_the_wire_names_the_callers_span() -> None:
    t = tracer()
    parent = t.extract({"traceparent": TRACEPARENT, "tracestate": "x" * 5000, "other": "1"})
    assert parent is not None and t.sampled(parent)
    assert t.inject(parent) == {"traceparent": TRACEPARENT}  # the oversized tracestate dropped
    metadata = [("authorization", "Bearer t"), ("traceparent", TRACEPARENT),
                ("tracestate", "k=v"), ("grainery-ctx-x", "1"), ("traceparent-bin", b"\x00")]
    parent = t.extract_metadata(metadata)
    assert t.inject(parent) == {"traceparent": TRACEPARENT, "tracestate": "k=v"}


def test_the_span_api_is_a_no_op_when_off_and_nests_when_on() -> None:
    tracing.install(None)
    with tracing.span("grainery.test.step") as nothing:
        assert nothing is None
    assert not tracing.enabled()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(CallTracer(provider, silo_id="s1"))
    try:
        assert tracing.enabled()
        with tracing.span("grainery.test.outer", "producer", {"n": 1}) as outer:
            assert outer is not None
            with pytest.raises(KeyError), tracing.span("grainery.test.inner"):
                raise KeyError("boom")
        with pytest.raises(ValueError, match="span kind"):
            tracing.span("x", "sideways").__enter__()
    finally:
        tracing.install(None)
    inner, outer_record = from_sdk(exporter.get_finished_spans())[:2]
    assert (outer_record.name, outer_record.kind) == ("grainery.test.outer", "producer")
    assert outer_record.attributes == {"grainery.silo_id": "s1", "n": 1}
    assert inner.parent_id == outer_record.span_id
    assert inner.attributes["error.type"] == "KeyError"


def test_the_python_clients_call_is_a_child_of_the_callers_span() -> None:
    """The client's span is a child of the span around the call, also through
    SyncGrainClient, whose loop runs on another thread (asyncio hands the calling thread's
    context variables to the task it starts there); the silo's side is checked by
    tests/integration/test_tracing.py."""
    from grainery.client import GrainClient, SyncGrainClient
    from grainery.client.errors import GrainError

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = provider.get_tracer("app")
    with SyncGrainClient("127.0.0.1:1", tracer_provider=provider, timeout=0.3,
                         refresh_interval=0) as client:
        with app.start_as_current_span("request"), pytest.raises(GrainError):
            client.get_grain("Counter", "k").add(1)  # nothing listens: it fails, traced
    assert isinstance(GrainClient("127.0.0.1:1", tracer_provider=provider).tracer, CallTracer)
    call, request = sorted(from_sdk(exporter.get_finished_spans()), key=lambda s: s.name)
    assert (call.name, call.kind) == ("Counter/add", "client")
    assert call.parent_id == request.span_id and call.trace_id == request.trace_id
    assert call.attributes["error.type"] == "DeadlineExceededError"


async def test_store_spans_are_made_only_inside_a_trace() -> None:
    """A state or directory operation outside any call (an idle deactivation) is no trace
    of its own; inside a call's trace it is a child."""
    from grainery.client.routing import GrainId

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(CallTracer(provider, silo_id="s1"))

    class Store:
        @tracing.traced_grain_op("grainery.state.write")
        async def write(self, grain: GrainId, payload: bytes) -> int:
            return len(payload)

    try:
        assert await Store().write(GrainId("Counter", "k"), b"abc") == 3
        assert exporter.get_finished_spans() == ()
        with provider.get_tracer("t").start_as_current_span("call"):
            assert await Store().write(GrainId("Counter", "k"), b"ab") == 2
    finally:
        tracing.install(None)
    write, call = from_sdk(exporter.get_finished_spans())
    assert (write.name, write.kind, write.parent_id) == ("grainery.state.write", "client",
                                                         call.span_id)
    assert write.attributes == {"grainery.silo_id": "s1", "grainery.grain_type": "Counter",
                                "db.system.name": "redis"}
