"""``@durable``: mark a grain method as a durable run (see silo/durable/runtime.py).

The decorator replaces the method, for callers, by a thin wrapper that hands the call to the
activation's :class:`~grainery.silo.durable.runtime.DurableRuntime`; the original function
is kept on the wrapper and is what the run executes (and re-executes on replay). The wrapper
is marked ``@interleave``: the call that waits for a run's result never holds the grain's
turn (the run takes turns of its own), so queries and signals reach the grain meanwhile.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from grainery.silo.decorators import INTERLEAVE, ONE_WAY, READ_ONLY, marked

DURABLE = "__grainery_durable__"

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])


def durable(method: F) -> F:
    """A durable method: a call starts a run recorded in the grain's journal; the call
    returns the run's result (see the README, "Durable agents")."""
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f"@durable needs an async def method, not {method!r}")
    if marked(method, READ_ONLY) or marked(method, ONE_WAY):
        raise TypeError(f"@durable cannot be combined with @read_only or @one_way "
                        f"({method.__qualname__})")

    @functools.wraps(method)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        from grainery.silo.durable.runtime import runtime_of

        return await runtime_of(self).call(method.__name__, list(args), dict(kwargs))

    setattr(call, DURABLE, method)
    setattr(call, INTERLEAVE, True)
    return call  # type: ignore[return-value]


def original(function: Any) -> Callable[..., Coroutine[Any, Any, Any]] | None:
    """The function a durable wrapper runs, or None if ``function`` is not durable."""
    return getattr(function, DURABLE, None)


_DURABLE_TYPES: dict[type, dict[str, Callable[..., Coroutine[Any, Any, Any]]]] = {}


def durable_methods(cls: type) -> dict[str, Callable[..., Coroutine[Any, Any, Any]]]:
    """The durable methods of a grain class by name (computed once per class)."""
    found = _DURABLE_TYPES.get(cls)
    if found is None:
        found = {}
        for name in dir(cls):
            if name.startswith("_"):
                continue
            function = original(getattr(cls, name, None))
            if function is not None:
                found[name] = function
        _DURABLE_TYPES[cls] = found
    return found
