"""Who subscribes to a stream: implicit subscriptions (by namespace, on the grain class) and
explicit ones (stored in Redis by ``Grain.subscribe``).

Implicit subscriptions are read from the grain classes this silo registered: every silo of
a cluster is expected to host the same grain modules (as for placement), so the silo that
pumps a stream knows its implicit subscribers without asking anyone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from grainery.silo.streams.names import StreamId, check_stream, parse_subscriber, subscriber_field
from grainery.silo.streams.store import StreamStore

C = TypeVar("C", bound=type)
IMPLICIT_NAMESPACES = "__grainery_implicit_streams__"
HOOK = "on_stream_event"


def implicit_subscription(namespace: str) -> Callable[[C], C]:
    """Class decorator: the grain whose key equals a stream's key receives every event of
    every stream in ``namespace`` (activated on demand), through its ``on_stream_event``."""
    check_stream(namespace, "-")

    def mark(cls: C) -> C:
        hook = getattr(cls, HOOK, None)
        if hook is None or not inspect.iscoroutinefunction(hook):
            raise TypeError(
                f"@implicit_subscription({namespace!r}) on {cls.__qualname__}: the class needs "
                f"`async def {HOOK}(self, namespace, key, event, token)`"
            )
        namespaces = tuple(getattr(cls, IMPLICIT_NAMESPACES, ()))
        if namespace not in namespaces:
            setattr(cls, IMPLICIT_NAMESPACES, (*namespaces, namespace))
        return cls

    return mark


def implicit_namespaces(cls: type) -> tuple[str, ...]:
    return tuple(getattr(cls, IMPLICIT_NAMESPACES, ()))


@dataclass(frozen=True)
class Subscriber:
    """One subscription of one stream: the grain that receives its events."""

    grain_type: str
    key: str
    explicit: bool

    @property
    def field(self) -> str:
        """Its name in the stream's positions (and subscribers) hash."""
        return subscriber_field(self.grain_type, self.key)

    def __str__(self) -> str:
        return f"{self.grain_type}/{self.key}"


class ImplicitSubscriptions:
    """namespace -> the grain types that subscribe to it implicitly."""

    def __init__(self, classes: Iterable[tuple[str, Any]]) -> None:
        self._types: dict[str, list[str]] = {}
        for type_name, cls in classes:
            for namespace in implicit_namespaces(cls):
                self._types.setdefault(namespace, []).append(type_name)

    def types_for(self, namespace: str) -> list[str]:
        return self._types.get(namespace, [])


async def subscribers_of(
    stream: StreamId, implicit: ImplicitSubscriptions, store: StreamStore,
) -> dict[str, Subscriber]:
    """Every subscription of ``stream``, by position field."""
    found = [Subscriber(t, stream.key, False) for t in implicit.types_for(stream.namespace)]
    for field in await store.explicit_subscribers(stream):
        grain_type, key = parse_subscriber(field)
        found.append(Subscriber(grain_type, key, True))
    # An explicit subscription of a grain that is also an implicit subscriber is one
    # subscription (one position): the explicit one, so unsubscribe ends it.
    return {s.field: s for s in sorted(found, key=lambda s: s.explicit)}
