"""Call filters: ``async def my_filter(call, proceed)`` code that runs around grain calls.

One shape everywhere (silo-wide incoming filters, a grain's ``on_incoming_call`` and a
client's outgoing filters): the filter reads ``call.grain_type``, ``.key``, ``.method``,
``.args``, ``.kwargs`` and ``.context``, may set context values, and either returns
``await proceed()`` (the rest of the pipeline: the next filter, then the grain), returns a
value of its own (the caller gets it instead), or raises to reject the call.

Why the error rules below: a filter is code the silo runs for every call, so its own
mistake must become the *caller's* error, never a silo crash or an anonymous ``internal``
one. ``PermissionError`` is the filter's way to say no (``permission_denied``); a
GrainError is passed on as it is (a filter may choose any error the table has); anything
else is reported as kind ``filter``, naming the filter and the exception type. An error
that ``proceed()`` raised (the grain's own failure) passes through a filter unchanged,
so wrapping a call in a timing filter never changes how it fails.

Why arguments are read-only: a silo validates the arguments against the method's
signature before any filter runs; letting a filter replace them would need a second
validation on every filtered call. To hand a grain extra facts, set a context value.

This module belongs to the client package (the lower layer) because clients run filters
too; the silo's loading and wiring of its filters is in :mod:`grainery.silo.filters`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from grainery.client.errors import FilterError, GrainError, PermissionDeniedError

Proceed = Callable[[], Awaitable[Any]]


class CallValue(Protocol):
    """What a filter's view reads: the silo's GrainCall, or a client's OutgoingCall."""

    grain_type: str
    key: str
    method: str
    args: list[Any]
    kwargs: Mapping[str, Any]
    context: Mapping[str, str]  # a dict once a filter wrote to it


class Call:
    """The view of one call a filter gets: a thin wrapper over the call's one value (the
    silo's GrainCall), so a context value a filter sets is the value the grain and every
    further hop see. Arguments are read-only (see the module docstring)."""

    __slots__ = ("_call",)

    def __init__(self, call: CallValue) -> None:
        self._call = call

    @property
    def grain_type(self) -> str:
        return self._call.grain_type

    @property
    def key(self) -> str:
        return self._call.key

    @property
    def method(self) -> str:
        return self._call.method

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self._call.args)

    @property
    def kwargs(self) -> Mapping[str, Any]:
        return MappingProxyType(self._call.kwargs)

    @property
    def context(self) -> dict[str, str]:
        """The request context: set ``call.context["name"] = "value"`` (strings) to pass a
        value on to the grain and to every call made on behalf of this one."""
        context = self._call.context
        if not isinstance(context, dict):  # the shared empty mapping: give the call its own
            context = self._call.context = dict(context)
        return context

    @property
    def target(self) -> str:
        return f"{self._call.grain_type}/{self._call.key}.{self._call.method}"

    def __repr__(self) -> str:
        return f"Call({self.target})"


@dataclass(slots=True, eq=False)
class OutgoingCall:
    """A client's call before it is sent: what its outgoing filters see through Call."""

    grain_type: str
    key: str
    method: str
    args: list[Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, str] = field(default_factory=dict)


Filter = Callable[[Call, Proceed], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class NamedFilter:
    """A filter and the name errors use for it (``module:name``)."""

    func: Filter
    name: str


def named(filters: Sequence[Filter | NamedFilter]) -> tuple[NamedFilter, ...]:
    """Filters as given to a client or a silo, each checked to be an async callable."""
    result: list[NamedFilter] = []
    for item in filters:
        if isinstance(item, NamedFilter):
            result.append(item)
            continue
        if not is_async_callable(item):
            raise TypeError(
                f"call filter {item!r} is not an async callable: write "
                "`async def my_filter(call, proceed): return await proceed()`"
            )
        module = getattr(item, "__module__", None) or "?"
        name = getattr(item, "__qualname__", None) or type(item).__qualname__
        result.append(NamedFilter(item, f"{module}:{name}"))
    return tuple(result)


def is_async_callable(candidate: object) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(candidate):
        return True
    call = getattr(type(candidate), "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def filter_failure(name: str, exc: Exception) -> GrainError:
    """The caller's error for an exception a filter raised itself (not passed on from
    ``proceed()``)."""
    if isinstance(exc, GrainError):
        return exc
    text = str(exc)[:1000]
    if isinstance(exc, PermissionError):
        return PermissionDeniedError(f"call refused by filter {name}: {text or 'denied'}")
    return FilterError(f"call filter {name} raised {type(exc).__name__}: {text}",
                       type(exc).__name__)


def check_context_set(name: str, context: Mapping[str, str]) -> None:
    """Context values travel as strings; a filter that set anything else is at fault."""
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise FilterError(
                f"call filter {name} set request context {str(key)[:100]!r} to a "
                f"{type(value).__name__}; context names and values are strings", "TypeError",
            )


class _Proceed:
    """``proceed`` for one filter: runs the rest of the pipeline, once."""

    __slots__ = ("_index", "_run", "used")

    def __init__(self, run: _Run, index: int) -> None:
        self._run, self._index = run, index
        self.used = False

    def __call__(self) -> Awaitable[Any]:
        if self.used:
            raise RuntimeError("proceed() was called twice; a filter runs the call once")
        self.used = True
        check_context_set(self._run.filters[self._index - 1].name, self._run.call.context)
        return self._run.at(self._index)


# Told of each exception a filter raised itself (the silo logs them with their traceback).
Report = Callable[[str, Exception], None]


@dataclass(slots=True, eq=False)
class _Run:
    filters: tuple[NamedFilter, ...]
    call: CallValue
    view: Call
    terminal: Proceed
    report: Report | None = None
    # The exception that last left a level of the pipeline: a filter re-raising exactly
    # it passes on the rest's error (the grain's own), which is never the filter's fault.
    raised: BaseException | None = None

    async def at(self, index: int) -> Any:
        if index == len(self.filters):
            try:
                return await self.terminal()
            except BaseException as exc:
                self.raised = exc
                raise
        current = self.filters[index]
        try:
            result = await current.func(self.view, _Proceed(self, index + 1))
        except Exception as exc:
            if exc is self.raised:
                raise  # the rest of the pipeline's error: passed on unchanged
            if self.report is not None:
                self.report(current.name, exc)
            error = self.raised = filter_failure(current.name, exc)
            raise error from None
        except BaseException as exc:  # cancelled, or a reroute: never the filter's to keep
            self.raised = exc
            raise
        if inspect.iscoroutine(result):
            result.close()
            error = self.raised = FilterError(
                f"call filter {current.name} returned a coroutine: write "
                "`return await proceed()`", "TypeError",
            )
            raise error
        return result


def run_filters(
    filters: tuple[NamedFilter, ...], call: CallValue, terminal: Proceed,
    report: Report | None = None,
) -> Coroutine[Any, Any, Any]:
    """Run ``terminal`` (the call itself) inside ``filters``, outermost first."""
    return _Run(filters, call, Call(call), terminal, report).at(0)


def run_hook(
    hook: Filter, name: str, call: CallValue, terminal: Proceed, report: Report | None = None
) -> Coroutine[Any, Any, Any]:
    """Run ``terminal`` inside one filter (a grain's ``on_incoming_call``), under the same
    rules as any other filter; its errors name it ``name``."""
    return _Run((NamedFilter(hook, name),), call, Call(call), terminal, report).at(0)
