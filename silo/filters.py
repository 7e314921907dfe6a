"""A silo's call filters: loading ``--filter MODULE:NAME``, running them around the calls
that run here, and a grain's own ``on_incoming_call`` hook.

Where silo-wide filters run: on the silo where the grain's activation is, just before
the call joins the grain's queue, once per call, for client calls and grain-to-grain
calls alike. A silo that only forwards a call runs none (the owner runs them), so a
forwarded call is never filtered twice. The grain is activated before its filters run
(placement and activation are one step), so a refused call may still activate the grain.

Why the grain's hook is inside the turn and the silo's filters are not: the hook is
grain code and may read ``self.state``, so it needs the turn's guarantees; a silo filter
(a token check, a timer) must not hold up a grain's queue while it waits.

The pipeline itself (the ``Call`` view, ``proceed``, the error rules) is
:mod:`grainery.client.filters`, shared with client-side filters and with the grain's hook
(which the activation runs through ``run_hook``).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from grainery.client.errors import GrainError
from grainery.client.filters import (
    Filter,
    NamedFilter,
    Proceed,
    is_async_callable,
    named,
    run_filters,
    run_hook,
)
from grainery.silo.call import GrainCall
from grainery.silo.failures import GRAIN_FAILURES
from grainery.silo.startup_error import StartupError

if TYPE_CHECKING:
    from grainery.silo.grain import Grain


def load_filter(spec: str) -> NamedFilter:
    """Import one ``--filter MODULE:NAME``; a mistake is a one-line StartupError."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise StartupError(
            f"--filter takes MODULE:NAME, not {spec!r}",
            "e.g. --filter myfilters:check_token (an async def in myfilters.py)",
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise StartupError(
                f"--filter {spec}: no module named {module_name!r}",
                "run from the directory that holds it, or put that directory on PYTHONPATH",
            ) from None
        raise StartupError(
            f"--filter {spec}: module {module_name!r} imports {exc.name!r}, which is not "
            "installed", f"install the package that provides {exc.name!r}",
        ) from None
    except Exception as exc:  # noqa: BLE001 - any error in the user's module body
        raise StartupError(
            f"--filter {spec}: module {module_name!r} failed to import: "
            f"{type(exc).__name__}: {exc}",
            f"python -c 'import {module_name}' shows the traceback",
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise StartupError(
                f"--filter {spec}: module {module_name!r} has no attribute {attribute!r}",
                "check the name after the colon",
            )
        target = getattr(target, part)
    if not is_async_callable(target):
        raise StartupError(
            f"--filter {spec}: {attribute} is not an async callable",
            "a filter is `async def NAME(call, proceed): return await proceed()`",
        )
    return NamedFilter(target, spec)


def load_filters(
    specs: Sequence[str], given: Sequence[Filter | NamedFilter] = ()
) -> tuple[NamedFilter, ...]:
    """The silo's filters: those passed in Python first (outermost), then ``--filter``'s."""
    try:
        from_python = named(given)
    except TypeError as exc:
        raise StartupError(str(exc)) from None
    return from_python + tuple(load_filter(spec) for spec in specs)


class Rerouted(BaseException):
    """The grain began deactivating while the filters ran: the dispatcher routes the call
    again (and its filters run again where it lands). A BaseException, so that a filter's
    ``except Exception`` cannot swallow it."""


class SiloFilters:
    """The silo-wide incoming filters, as the dispatcher runs them around a local call."""

    __slots__ = ("filters",)

    def __init__(self, filters: tuple[NamedFilter, ...]) -> None:
        self.filters = filters

    def __bool__(self) -> bool:
        return bool(self.filters)

    def run(self, call: GrainCall, terminal: Proceed) -> Awaitable[Any]:
        """``terminal`` queues the call on the grain and awaits its result (raising
        Rerouted if the grain is going away)."""
        return run_filters(self.filters, call, terminal, report_failure)


def report_failure(name: str, exc: Exception) -> None:
    """A filter's own exception, in the silo's log with its traceback (rate-limited as
    grain failures are): the caller sees only its type and message."""
    if not isinstance(exc, (PermissionError, GrainError)):  # refusals are not failures
        GRAIN_FAILURES.report(
            f"filter {name}", exc, f"call filter {name} raised {type(exc).__name__}: {exc}"
        )


def incoming_call(
    grain: Grain, call: GrainCall, method: Callable[[], Awaitable[Any]]
) -> Awaitable[Any]:
    """The grain's ``on_incoming_call`` around ``method`` (the activation runs it inside the
    turn); its own errors name it ``Type.on_incoming_call``."""
    return run_hook(grain.on_incoming_call, f"{type(grain).grain_type}.on_incoming_call",
                    call, method, report_failure)
