"""OpenTelemetry spans for grain calls: the layer the client SDK and the silo share.

Why one small layer instead of OpenTelemetry calls spread through the code: tracing is
optional (the ``grainery[tracing]`` extra) and must cost nothing when it is off. Nothing
here imports ``opentelemetry`` until a :class:`CallTracer` is built, and every caller
holds a ``CallTracer | None``: when tracing is off the hot path pays one ``is None`` test.

On the wire (every language): a call carries the W3C trace context, ``traceparent`` and
``tracestate``. Unary ``Gateway/Invoke`` carries them as gRPC metadata of those names;
the multiplexed call stream carries them per call in ``StreamCall.trace_context`` (the
same two names as map keys), because the stream's own metadata belongs to no one call.
Anything else in those places is ignored, and a malformed value is dropped (the call
then starts a new trace), never an error: tracing must not change whether a call runs.

Span attributes follow the OpenTelemetry RPC conventions with the grain as the service:
``rpc.system = "grpc"``, ``rpc.service`` = grain type, ``rpc.method`` = grain method,
span name ``GrainType/method``. Grain keys and argument values can be user data (an
e-mail address as a key, a prompt as an argument), so they are recorded only when asked
for (``grain_keys``/``arguments``); grain state never is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, TracerProvider

    from grainery.client._proto.grainery.v1 import grainery_pb2 as pb

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
INSTALL_HINT = "pip install 'grainery[tracing]'"
# Longest header value read from the wire: a traceparent is 55 characters; a tracestate
# longer than this is dropped (W3C lets a receiver drop what it cannot keep).
MAX_TRACE_HEADER_CHARS = 1024
# Argument values recorded (when enabled) are cut to this many characters.
MAX_ARGUMENT_CHARS = 1024

SPAN_KINDS = ("internal", "server", "client", "producer", "consumer")


class TracingUnavailableError(RuntimeError):
    """Tracing was asked for but the OpenTelemetry packages are not installed."""


def require_opentelemetry(what: str) -> None:
    """Raise TracingUnavailableError, naming the fix, unless the OpenTelemetry API and SDK
    can be imported. ``what``: the option that asked for tracing (for the message)."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:
        raise TracingUnavailableError(
            f"{what} needs the OpenTelemetry packages, which are not installed "
            f"({exc.name or exc}): {INSTALL_HINT}"
        ) from None


def span_kind(kind: str) -> Any:
    """The OpenTelemetry SpanKind named ``kind`` (one of SPAN_KINDS)."""
    from opentelemetry.trace import SpanKind

    if kind not in SPAN_KINDS:
        raise ValueError(f"span kind {kind!r} is not one of {', '.join(SPAN_KINDS)}")
    return SpanKind[kind.upper()]


class CallTracer:
    """Spans for grain calls from one OpenTelemetry tracer provider, and the W3C trace
    context on the wire.

    ``roots``: whether a call with no trace around it may start a trace. A silo whose
    sampling ratio is 0 passes False, so an untraced call costs it nothing at all (no span
    object, no ids), exactly what a ratio-0 sampler would decide anyway.
    """

    def __init__(
        self,
        provider: TracerProvider,
        *,
        grain_keys: bool = False,
        arguments: bool = False,
        silo_id: str | None = None,
        roots: bool = True,
    ) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = provider.get_tracer("grainery")
        self.grain_keys = grain_keys
        self.arguments = arguments
        self.silo_id = silo_id
        self.roots = roots
        self._propagator = TraceContextTextMapPropagator()
        self._trace = trace
        self._context = otel_context
        self._client = trace.SpanKind.CLIENT
        self._server = trace.SpanKind.SERVER
        self._internal = trace.SpanKind.INTERNAL
        # On every span of this tracer (RPC spans add rpc.* on top).
        self._base: dict[str, str] = {} if silo_id is None else {"grainery.silo_id": silo_id}

    # ----- attributes ------------------------------------------------------
    def call_attributes(self, request: pb.InvokeRequest) -> dict[str, Any]:
        """The RPC attributes of one grain call (plus key and arguments when enabled)."""
        attributes: dict[str, Any] = {
            **self._base,
            "rpc.system": "grpc",
            "rpc.service": request.grain_type,
            "rpc.method": request.method,
            "grainery.grain_type": request.grain_type,
        }
        if self.grain_keys:
            attributes["grainery.grain_key"] = request.grain_key
        if self.arguments:
            attributes["grainery.args"] = request.args_json[:MAX_ARGUMENT_CHARS]
            if request.kwargs_json:
                attributes["grainery.kwargs"] = request.kwargs_json[:MAX_ARGUMENT_CHARS]
        return attributes

    def attributes(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The attributes every span of this tracer has, plus ``extra``."""
        return {**self._base, **extra} if extra else dict(self._base)

    # ----- spans -----------------------------------------------------------
    def current(self) -> Context:
        return self._context.get_current()

    def idle(self) -> bool:
        """Nothing can make a span here: no trace may start (``roots`` False) and the
        current context is empty. The cheapest test, for the hot path of a ratio-0 silo."""
        return not self.roots and not self._context.get_current()

    def has_parent(self, parent: Context | None) -> bool:
        """Whether ``parent`` (None: the current context) holds a valid span context."""
        span = self._trace.get_current_span(parent)
        return bool(span.get_span_context().is_valid)

    def sampled(self, parent: Context | None) -> bool:
        """Whether the span in ``parent`` (None: the current one) belongs to a sampled trace
        (its flag, which a remote parent carries too); a sampled-out one gets no children."""
        return bool(self._trace.get_current_span(parent).get_span_context().trace_flags.sampled)

    def start(
        self, name: str, kind: Any, attributes: Mapping[str, Any] | None,
        parent: Context | None = None,
    ) -> Span:
        """A started span (the caller ends it), child of ``parent`` or the current span."""
        return self.tracer.start_span(name, parent, kind, attributes)

    def start_client(self, request: pb.InvokeRequest, parent: Context | None = None) -> Span:
        return self.tracer.start_span(
            f"{request.grain_type}/{request.method}", parent, self._client,
            self.call_attributes(request),
        )

    def start_server(self, request: pb.InvokeRequest, parent: Context | None) -> Span:
        return self.tracer.start_span(
            f"{request.grain_type}/{request.method}", parent, self._server,
            self.call_attributes(request),
        )

    def start_internal(
        self, name: str, attributes: Mapping[str, Any] | None, parent: Context | None = None
    ) -> Span:
        return self.tracer.start_span(name, parent, self._internal, attributes)

    def with_span(self, span: Span, parent: Context | None = None) -> Context:
        """``parent`` (None: the current context) with ``span`` as its current span."""
        return self._trace.set_span_in_context(span, parent)

    def attach(self, context: Context) -> object:
        return self._context.attach(context)

    def detach(self, token: object) -> None:
        self._context.detach(token)  # type: ignore[arg-type]

    def end(self, span: Span, error: BaseException | None = None) -> None:
        """End ``span``; a GrainError sets the RPC status code, its kind, and ERROR.
        Only the error's type is recorded, never its message (it may hold user data)."""
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            code = getattr(error, "code", None)
            kind = getattr(error, "kind", None)
            if code is not None:
                span.set_attribute("rpc.grpc.status_code", int(code.value[0]))
            if kind:
                span.set_attribute("grainery.error_kind", str(kind))
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, str(kind or type(error).__name__)))
        else:
            span.set_attribute("rpc.grpc.status_code", 0)
        span.end()

    def end_internal(self, span: Span, error: BaseException | None = None) -> None:
        """End a span that is not an RPC (a turn, a storage operation): as :meth:`end`,
        without the RPC status code."""
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            kind = getattr(error, "kind", None)
            if kind:
                span.set_attribute("grainery.error_kind", str(kind))
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, str(kind or type(error).__name__)))
        span.end()

    # ----- the wire --------------------------------------------------------
    def inject(self, context: Context | None = None) -> dict[str, str]:
        """``traceparent`` (and ``tracestate`` if any) for the span in ``context`` (None:
        the current one); empty if there is no valid span."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context)
        return carrier

    def extract(self, carrier: Mapping[str, str]) -> Context | None:
        """The remote parent in ``carrier`` (the two W3C names, nothing else), or None when
        it carries none or a malformed one."""
        parent = carrier.get(TRACEPARENT)
        if not parent or not isinstance(parent, str) or len(parent) > MAX_TRACE_HEADER_CHARS:
            return None
        headers = {TRACEPARENT: parent}
        state = carrier.get(TRACESTATE)
        if state and isinstance(state, str) and len(state) <= MAX_TRACE_HEADER_CHARS:
            headers[TRACESTATE] = state
        context = self._propagator.extract(headers)
        return context if self.has_parent(context) else None

    def extract_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Context | None:
        """As :meth:`extract`, from a unary call's gRPC metadata."""
        found: dict[str, str] = {}
        for key, value in metadata:
            if key in TRACE_HEADERS and isinstance(value, str):
                found[key] = value
        return self.extract(found) if found else None


def global_tracer_provider() -> TracerProvider | None:
    """The provider an application installed with ``trace.set_tracer_provider``, if any.

    Only looked up when the application has imported ``opentelemetry.trace`` already: a
    program that never touched OpenTelemetry does not pay for importing it."""
    import sys

    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider
