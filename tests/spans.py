"""Spans as plain values, whichever way they were collected (the SDK's in-memory exporter,
or OTLP protobufs a test receiver got), and the tree of one trace, to compare with the
parent/child structure a test expects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpanRecord:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str  # "" for a root
    name: str
    kind: str  # "server", "client", "internal", ...
    attributes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def silo(self) -> str:
        return str(self.attributes.get("grainery.silo_id", ""))


def from_sdk(spans: Iterable[Any]) -> list[SpanRecord]:
    """Records of OpenTelemetry SDK ReadableSpans (an InMemorySpanExporter's)."""
    records = []
    for span in spans:
        context = span.get_span_context()
        parent = span.parent
        records.append(SpanRecord(
            f"{context.trace_id:032x}", f"{context.span_id:016x}",
            f"{parent.span_id:016x}" if parent is not None else "", span.name,
            span.kind.name.lower(), dict(span.attributes or {}),
        ))
    return records


_OTLP_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def from_otlp(request: Any) -> list[SpanRecord]:
    """Records of the spans in an OTLP ExportTraceServiceRequest."""
    records = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {a.key: _value(a.value) for a in span.attributes}
                records.append(SpanRecord(
                    span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                    span.name, _OTLP_KINDS.get(span.kind, "unspecified"), attributes,
                ))
    return records


def _value(value: Any) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None


Tree = tuple[str, tuple[Any, ...]]  # ("name kind@silo", (children...)), children sorted


def tree(spans: list[SpanRecord], root: SpanRecord, silos: dict[str, str] | None = None) -> Tree:
    """The spans under ``root`` as nested ``("name kind@silo", (children, ...))``, children
    sorted, so two trees compare equal whatever order the spans ended in. ``silos`` renames
    silo ids (e.g. to "A", "B", "C")."""
    names = silos or {}
    label = f"{root.name} {root.kind}"
    if root.silo:
        label += f"@{names.get(root.silo, root.silo)}"
    children = sorted(
        (tree(spans, s, silos) for s in spans if s.parent_id == root.span_id),
        key=repr,
    )
    return label, tuple(children)
