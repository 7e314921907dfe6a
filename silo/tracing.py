"""Tracing in the silo: OTLP export, sampling, and the span API every feature uses.

Off by default. ``grainery silo --otlp-endpoint HOST:PORT`` turns it on: spans go to an
OTLP/gRPC collector through a BatchSpanProcessor (export happens on its own thread, in
batches, never on the event loop), sampled by a parent-based ratio sampler
(``--trace-sampling``, default 1.0): a call that arrives with a trace context follows its
caller's decision, a call that starts a trace is sampled with that probability.

Why off costs nothing: with no endpoint nothing imports ``opentelemetry``, the dispatcher
and the grain client hold ``None`` instead of a tracer, and a call carries no trace
(``GrainCall.trace is None``), so each stage pays one ``is None`` test. With a ratio of 0
an untraced call costs the same (no span object is made at all); only calls that arrive
with a ``traceparent`` are followed.

The spans of a call (names and attributes are documented in the README, "Tracing"):
``Type/method`` SERVER on each silo it reaches (its dispatch), ``grainery.forward`` CLIENT
when a silo passes it on to the grain's owner, ``grainery.activate`` when it activates the
grain (with the directory and state spans inside), ``grainery.turn`` for the turn itself
(the gap before it is the queueing; an event ``grainery.queued`` says what it waited
behind), and ``Type/method`` CLIENT for each grain-to-grain call the turn makes.

For other features (reminder ticks, stream deliveries, durable steps), one call::

    from grainery.silo import tracing

    with tracing.span("grainery.reminder.tick", attributes={"grainery.grain_type": t}):
        ...

It is a no-op costing a global test when tracing is off (build expensive attributes only
``if tracing.enabled()``); when on, the span is a child of whatever span is current (the
turn, inside grain code) and becomes current inside the block. Kinds: "internal"
(default), "client", "server", "producer", "consumer".
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from grainery.client.tracing import (
    INSTALL_HINT,
    CallTracer,
    TracingUnavailableError,
    require_opentelemetry,
    span_kind,
)
from grainery.silo.startup_error import StartupError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
    from grainery.client.routing import GrainId
    from grainery.silo.activation import Activation
    from grainery.silo.call import GrainCall

log = logging.getLogger("grainery.tracing")

# The tracer of this silo process, None when tracing is off (set by configure()).
_TRACER: CallTracer | None = None
SHUTDOWN_SECONDS = 3.0  # the most a stopping silo waits to flush its last spans


@dataclass(frozen=True)
class TracingOptions:
    """What the silo's flags ask for (see silo/config.py)."""

    endpoint: str | None = None
    sampling: float = 1.0
    grain_keys: bool = False
    arguments: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.sampling <= 1.0:
            raise ValueError("--trace-sampling is a ratio between 0 and 1")


class SiloTracing:
    """The silo's tracer provider (exporting over OTLP) and its CallTracer."""

    def __init__(self, provider: TracerProvider, tracer: CallTracer) -> None:
        self.provider = provider
        self.tracer = tracer

    def shutdown(self) -> None:
        """Flush what is buffered and stop the exporter, waiting at most SHUTDOWN_SECONDS
        (an unreachable collector must not hold up a silo's exit)."""
        done = threading.Thread(target=self.provider.shutdown, daemon=True,
                                name="grainery-trace-shutdown")
        done.start()
        done.join(SHUTDOWN_SECONDS)
        if done.is_alive():
            log.warning("trace export did not finish within %.0fs; spans dropped",
                        SHUTDOWN_SECONDS)


def check_available(options: TracingOptions) -> None:
    """Refuse to start (one line, with the fix) when tracing is asked for but the
    ``grainery[tracing]`` extra is not installed; before the silo binds anything."""
    if not options.endpoint:
        return
    try:
        require_opentelemetry("--otlp-endpoint")
        try:
            import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
        except ImportError as exc:
            raise TracingUnavailableError(
                f"--otlp-endpoint needs opentelemetry-exporter-otlp-proto-grpc, which is not "
                f"installed ({exc.name or exc})"
            ) from None
    except TracingUnavailableError as exc:
        raise StartupError(str(exc), f"{INSTALL_HINT}, or start without --otlp-endpoint") \
            from None


def build_provider(options: TracingOptions, silo_id: str, cluster: str) -> TracerProvider:
    """An SDK provider exporting to ``options.endpoint`` over OTLP/gRPC. ``HOST:PORT`` or
    ``http://HOST:PORT`` is plaintext; ``https://HOST:PORT`` is TLS (the collector's
    certificate is verified with the system CAs, or OTEL_EXPORTER_OTLP_CERTIFICATE)."""
    check_available(options)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    endpoint = options.endpoint or ""
    insecure = None if "://" in endpoint else True
    resource = Resource.create({
        "service.name": "grainery-silo",
        "service.instance.id": silo_id,
        "grainery.cluster": cluster,
    })
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(options.sampling))
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure))
    )
    return provider


def configure(options: TracingOptions, silo_id: str, cluster: str) -> SiloTracing | None:
    """Turn tracing on for this silo process as ``options`` say (None: it stays off).
    The provider also becomes OpenTelemetry's global one when none is set, so spans that
    grain code makes with the OpenTelemetry API join the same traces and exporter."""
    global _TRACER
    if not options.endpoint:
        return None
    provider = build_provider(options, silo_id, cluster)
    from opentelemetry import trace

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    tracer = CallTracer(
        provider, grain_keys=options.grain_keys, arguments=options.arguments,
        silo_id=silo_id, roots=options.sampling > 0,
    )
    _TRACER = tracer
    log.info("tracing on: OTLP to %s, sampling %.3g", options.endpoint, options.sampling)
    return SiloTracing(provider, tracer)


def install(tracer: CallTracer | None) -> None:
    """Make ``tracer`` the one :func:`span` uses (tests in one process; None: off)."""
    global _TRACER
    _TRACER = tracer


def enabled() -> bool:
    """Whether this silo traces (guard attributes that cost something to build)."""
    return _TRACER is not None


class _NoSpan:
    """What :func:`span` gives when there is nothing to record: enters to None."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(
    name: str, kind: str = "internal", attributes: Mapping[str, Any] | None = None
) -> Any:
    """A context manager: a span named ``name`` around the block, current inside it (its
    children nest under it), ended with ERROR and the exception's type if the block
    raises. Enters to the OpenTelemetry Span (None when nothing is recorded: tracing off,
    or the trace around it was sampled out). The silo id is added to ``attributes``."""
    tracer = _TRACER
    if tracer is None:
        return _NO_SPAN
    parent = tracer.current()
    if tracer.has_parent(parent):
        if not tracer.sampled(parent):
            return _NO_SPAN  # sampled out: its children are too
    elif not tracer.roots:
        return _NO_SPAN  # ratio 0: nothing starts a trace
    return _recorded(tracer, name, kind, attributes, parent)


@contextmanager
def _recorded(
    tracer: CallTracer, name: str, kind: str, attributes: Mapping[str, Any] | None,
    parent: Context,
) -> Iterator[Span]:
    started = tracer.start(name, span_kind(kind), tracer.attributes(attributes), parent)
    token = tracer.attach(tracer.with_span(started, parent))
    try:
        yield started
    except BaseException as error:
        tracer.end_internal(started, error)
        raise
    else:
        tracer.end_internal(started)
    finally:
        tracer.detach(token)


# ----- storage and directory operations ------------------------------------------
S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")
GrainOp = Callable[Concatenate[S, "GrainId", P], Coroutine[Any, Any, R]]


def grain_span(name: str, grain: GrainId, kind: str = "client", store: bool = True) -> Any:
    """:func:`span` for an operation on one grain (its type; its key only when keys are
    recorded); ``store``: a call to the state store (``db.system.name = redis``). Only
    inside a sampled trace: such an operation outside any call (a deactivation after an
    idle timeout, say) would otherwise be a trace of one span."""
    tracer = _TRACER
    if tracer is None:
        return _NO_SPAN
    parent = tracer.current()
    if not (tracer.has_parent(parent) and tracer.sampled(parent)):
        return _NO_SPAN
    attributes: dict[str, Any] = {"grainery.grain_type": grain.grain_type}
    if store:
        attributes["db.system.name"] = "redis"
    if tracer.grain_keys:
        attributes["grainery.grain_key"] = grain.key
    return span(name, kind, attributes)


def traced_grain_op(
    name: str, kind: str = "client", store: bool = True
) -> Callable[[GrainOp[S, P, R]], GrainOp[S, P, R]]:
    """Decorate an async method whose first argument is a GrainId: with tracing on, each
    call is a span ``name`` (see :func:`grain_span`); off, the wrapper hands back the
    method's own coroutine, so it costs one function call and no extra frame."""

    def decorate(method: GrainOp[S, P, R]) -> GrainOp[S, P, R]:
        @functools.wraps(method)
        def wrapper(
            self: S, grain: GrainId, /, *args: P.args, **kwargs: P.kwargs
        ) -> Coroutine[Any, Any, R]:
            if _TRACER is None:
                return method(self, grain, *args, **kwargs)
            return _in_span(name, grain, kind, store, method(self, grain, *args, **kwargs))

        return wrapper

    return decorate


async def _in_span(
    name: str, grain: GrainId, kind: str, store: bool, operation: Coroutine[Any, Any, R]
) -> R:
    with grain_span(name, grain, kind, store):
        return await operation


# ----- the call path (dispatcher, activation) -----------------------------------
class DispatchSpan:
    """The SERVER span of one call on this silo, and the context its stages run in."""

    __slots__ = ("context", "span", "token", "tracer")

    def __init__(self, tracer: CallTracer, span: Span | None, context: Context) -> None:
        self.tracer = tracer
        self.span = span  # None: sampled out (the context still carries the decision)
        self.context = context
        self.token = tracer.attach(context)

    def finish(self, error: BaseException | None = None) -> None:
        self.tracer.detach(self.token)
        if self.span is not None:
            self.tracer.end(self.span, error)


def start_dispatch(
    tracer: CallTracer, request: pb.InvokeRequest, parent: Context | None
) -> DispatchSpan | None:
    """The call's SERVER span, current from here on (the activation it may start, the
    forward, the turn); None when the call is not traced at all (no parent and a ratio of
    0). ``parent``: the caller's context from the wire, or None for a local call (its
    context is the current one: the grain-to-grain CLIENT span)."""
    if parent is None:
        parent = tracer.current()
        if not tracer.has_parent(parent) and not tracer.roots:
            return None
    if tracer.has_parent(parent) and not tracer.sampled(parent):
        return DispatchSpan(tracer, None, parent)  # sampled out upstream: no span here
    span = tracer.start_server(request, parent)
    if not span.is_recording():
        return DispatchSpan(tracer, None, tracer.with_span(span, parent))
    return DispatchSpan(tracer, span, tracer.with_span(span, parent))


def note_queued(call: GrainCall, activation: Activation, queued_before: int) -> None:
    """Just after ``activation.call``: if the call had to wait (it joined the queue behind
    queued calls or a running turn), an event ``grainery.queued`` on its span says behind
    what (``grainery.queued_ahead``, ``grainery.turns_running``)."""
    if call.trace is None or activation.queued <= queued_before:
        return  # not traced, or started at once
    running = activation.turns
    if not queued_before and not running:
        return  # first in line: the mailbox starts it next
    from opentelemetry import trace

    span = trace.get_current_span(call.trace)
    if span.is_recording():
        span.add_event("grainery.queued", {
            "grainery.queued_ahead": queued_before, "grainery.turns_running": running,
        })


class TurnSpan:
    """The ``grainery.turn`` span of a call's turn, and its context made current."""

    __slots__ = ("span", "token", "tracer")

    def __init__(self, tracer: CallTracer, call: GrainCall, context: Context) -> None:
        self.tracer = tracer
        self.span: Span | None = None
        if tracer.sampled(context):
            # No attributes: its parent, the call's SERVER span, has them all (and each
            # attribute costs a recorded call about a microsecond).
            self.span = tracer.start_internal("grainery.turn", None, context)
            context = tracer.with_span(self.span, context)
        self.token = tracer.attach(context)

    def finish(self, error: BaseException | None = None) -> None:
        self.tracer.detach(self.token)
        if self.span is not None:
            self.tracer.end_internal(self.span, error)


def start_turn(call: GrainCall) -> TurnSpan | None:
    """The turn's span, when the call is traced (``call.trace``); None otherwise."""
    tracer = _TRACER
    if tracer is None or call.trace is None:
        return None
    return TurnSpan(tracer, call, call.trace)


def clear_context() -> None:
    """Start a task that serves many calls (a grain's mailbox pump) with no trace of its
    own: it was created by one call and must not make later calls that call's children."""
    tracer = _TRACER
    if tracer is not None and tracer.current():  # (nothing to clear: the common case)
        from opentelemetry.context import Context

        tracer.attach(Context())


def start_forward(
    tracer: CallTracer, call: GrainCall, address: str, silo_id: str
) -> tuple[Span | None, dict[str, str] | None]:
    """The ``grainery.forward`` CLIENT span (None when not recorded) and the trace context
    to send with the forwarded call (None when the call is not traced)."""
    if call.trace is None:
        return None, None
    if not tracer.sampled(call.trace):
        return None, tracer.inject(call.trace)
    span = tracer.start(
        "grainery.forward", span_kind("client"), _forward_attributes(tracer, call, address,
                                                                     silo_id), call.trace,
    )
    return span, tracer.inject(tracer.with_span(span, call.trace))


def _forward_attributes(
    tracer: CallTracer, call: GrainCall, address: str, silo_id: str
) -> dict[str, Any]:
    attributes = tracer.attributes({
        "rpc.system": "grpc", "rpc.service": call.grain_type, "rpc.method": call.method,
        "grainery.grain_type": call.grain_type, "grainery.target_silo": silo_id,
        "server.address": address, "grainery.hops": call.hops + 1,
    })
    if tracer.grain_keys:
        attributes["grainery.grain_key"] = call.key
    return attributes


def tracer() -> CallTracer | None:
    """This silo's tracer (None: tracing off)."""
    return _TRACER
