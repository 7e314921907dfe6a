"""Markers on grain classes and methods that change how calls run: ``@interleave``,
``@read_only``, ``@one_way`` on methods, ``@stateless_worker(max_local=N)`` on classes.

Why markers: the registry reads them once, at registration, into each method's
:class:`~grainery.silo.registry.MethodSpec` and each type's
:class:`~grainery.silo.registry.GrainType`, so the call path never inspects functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

INTERLEAVE = "__grainery_interleave__"
READ_ONLY = "__grainery_read_only__"
ONE_WAY = "__grainery_one_way__"
STATELESS_MAX_LOCAL = "__grainery_stateless_max_local__"


def interleave(method: F) -> F:
    """This method's calls may run while another call of the grain waits at an ``await``
    (and others may run while it waits), even on a non-reentrant grain."""
    setattr(method, INTERLEAVE, True)
    return method


def read_only(method: F) -> F:
    """This method does not change the grain's state: its calls may interleave with each
    other, never with a call of any other (writing) method."""
    setattr(method, READ_ONLY, True)
    return method


def one_way(method: F) -> F:
    """The caller gets ``None`` as soon as the call is admitted to the grain's queue; the
    method runs later, in order; its failure is logged and counted, not returned."""
    setattr(method, ONE_WAY, True)
    return method


def stateless_worker(max_local: int = 1) -> Callable[[C], C]:
    """Activate this grain type on whichever silo receives the call, up to ``max_local``
    activations per silo, with no directory entry and no stored state."""
    if not isinstance(max_local, int) or isinstance(max_local, bool) or max_local < 1:
        raise ValueError(f"stateless_worker(max_local=...) must be a positive int, "
                         f"not {max_local!r}")

    def mark(cls: C) -> C:
        setattr(cls, STATELESS_MAX_LOCAL, max_local)
        return cls

    return mark


def marked(function: Any, marker: str) -> bool:
    return bool(getattr(function, marker, False))
