"""Grain failures in the silo's log, with their traceback, at a bounded rate.

Why: the caller only gets ``Type: message`` (a traceback would leak the grain's
internals over the wire), so the silo's log is where a developer finds out *where*
a grain failed. Why rate-limited: a grain failing on every call under load would
otherwise flood the log and cost more CPU than the calls themselves. Each
(grain type, exception type) pair may log ``per_minute`` tracebacks per minute; the
next line logged for that pair says how many were suppressed meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from grainery.client.errors import ActivationFailedError

log = logging.getLogger("grainery.grains")

WINDOW_SECONDS = 60.0
MAX_TRACKED = 1000  # (grain type, exception type) pairs; beyond this the table restarts


@dataclass(slots=True)
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class FailureLog:
    def __init__(
        self,
        logger: logging.Logger = log,
        per_minute: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self.per_minute = per_minute
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def report(self, grain_type: str, exc: BaseException, message: str) -> bool:
        """Log ``message`` with ``exc``'s traceback unless the pair is over its rate;
        returns whether it was logged."""
        key = (grain_type, type(exc).__name__)
        now = self._clock()
        window = self._windows.get(key)
        suppressed = 0
        if window is None or now - window.started >= WINDOW_SECONDS:
            suppressed = window.suppressed if window is not None else 0
            if len(self._windows) >= MAX_TRACKED:
                self._windows.clear()
            window = self._windows[key] = _Window(now)
        if window.logged >= self.per_minute:
            window.suppressed += 1
            return False
        window.logged += 1
        if suppressed:
            message += f" ({suppressed} more like it were not logged in the last minute)"
        self._logger.error("%s", message, exc_info=(type(exc), exc, exc.__traceback__))
        return True


# One per process: grain failures are reported by the dispatcher (calls) and the
# catalog (activations).
GRAIN_FAILURES = FailureLog()


def activation_failed(grain_type: str, grain: object, exc: Exception) -> ActivationFailedError:
    """The error the callers of a failed activation get (``on_activate`` raised, or the
    state could not be used), logged once here with its traceback; nothing ran, so the next
    call may simply try again (retry-safe)."""
    GRAIN_FAILURES.report(
        grain_type, exc, f"activation of {grain} failed: {type(exc).__name__}: {exc}"
    )
    return ActivationFailedError(
        f"activation of {grain} failed: {type(exc).__name__}: {str(exc)[:500]}"
    )
