"""RetryPolicy: how a durable step retries its function before recording a final error."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries in all (1: no retry); the wait before retry n (n >= 1) is
    ``min(initial * backoff ** (n - 1), max_interval)`` seconds; ``timeout``: seconds one
    attempt may take (None: no limit; an attempt that takes longer counts as failed with
    TimeoutError; a sync function keeps running in its thread, its result is ignored).
    ``non_retryable``: exception types recorded at once, without retrying."""

    max_attempts: int = 3
    initial: float = 0.1
    backoff: float = 2.0
    max_interval: float = 10.0
    timeout: float | None = None
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, not {self.max_attempts!r}")
        for name in ("initial", "max_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, "
                                 f"not {value!r}")
        if not isinstance(self.backoff, (int, float)) or not 1 <= self.backoff < 1000:
            raise ValueError(f"backoff must be a number in [1, 1000), not {self.backoff!r}")
        if self.timeout is not None and (
            not isinstance(self.timeout, (int, float)) or not 0 < self.timeout < math.inf
        ):
            raise ValueError(f"timeout must be None or seconds > 0, not {self.timeout!r}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the second attempt)."""
        return float(min(self.initial * self.backoff ** (retry - 1), self.max_interval))


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_RETRY = RetryPolicy()
