"""Background tasks that are neither lost nor silent.

Why: the event loop keeps only a weak reference to a task, so a task nobody holds can be
garbage-collected mid-flight, and an exception in a task nobody awaits is reported (if at
all) as "Task exception was never retrieved" long after the fact. Every fire-and-forget
task in the client and the silo goes through :func:`spawn`: a strong reference is kept
until the task ends, and a failure is logged at once with its traceback. Lives in the
client package because the silo imports the client, never the other way round.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("grainery.tasks")

T = TypeVar("T")

# Every task started with spawn() and not yet finished. The strong references live here.
_RUNNING: set[asyncio.Task[Any]] = set()


def spawn(
    coroutine: Coroutine[Any, Any, T],
    name: str | None = None,
    owner: set[asyncio.Task[Any]] | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> asyncio.Task[T]:
    """Start ``coroutine`` as a task that is referenced until done and whose failure is logged.

    ``owner`` is an optional set the caller keeps (e.g. to cancel its tasks on close); the
    task is added to it and removed again when it ends. Failures of the ``expected`` types
    are not logged: they are outcomes someone awaiting the task receives (e.g. a GrainError
    for the callers of a shared activation).
    """
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    _RUNNING.add(task)
    if owner is not None:
        owner.add(task)
        task.add_done_callback(owner.discard)
    task.add_done_callback(functools.partial(_finished, expected))
    return task


def _finished(expected: tuple[type[BaseException], ...], task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)
    if task.cancelled():
        return
    error = task.exception()  # retrieved: never "exception was never retrieved" later
    if error is not None and not isinstance(error, expected):
        log.error("background task %s failed", task.get_name(), exc_info=error)


def running() -> int:
    """How many spawned tasks are still running (all event loops of this process)."""
    return len(_RUNNING)
