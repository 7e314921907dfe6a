"""What the chaos load did, call by call: each op's id, times and outcome as the caller saw it.

An outcome is one of four, decided only from what the caller was told:
- *acknowledged*: the call returned; the op must be stored, exactly once;
- *not run*: the error was marked retry-safe (the system's promise that no grain
  code ran), so the op must never be stored;
- *not applied*: the write was refused (``stale_state`` or ``fenced``: "neither
  overwrites anything"), so the op must never be stored either;
- *uncertain*: anything else (a transport error that is not retry-safe,
  ``storage_unavailable``, a deadline): the op may or may not be stored, but never twice.

Times are seconds on the caller's monotonic clock, from the start of the run. They are
only compared with each other (one process, one clock), never with any silo's clock.
"""

from __future__ import annotations

import enum
import itertools
from collections import Counter
from dataclasses import dataclass, field

from grainery.client.errors import ActivationFencedError, GrainError, StaleStateError


class Outcome(enum.Enum):
    ACKED = "acknowledged"
    NOT_RUN = "reported as not run (retry-safe)"
    NOT_APPLIED = "reported as not applied (stale_state/fenced)"
    UNCERTAIN = "uncertain"


def classify(error: BaseException) -> Outcome:
    """The outcome a caller may conclude from ``error``, and nothing more."""
    if isinstance(error, GrainError) and error.retry_safe:
        return Outcome.NOT_RUN
    if isinstance(error, StaleStateError | ActivationFencedError):
        return Outcome.NOT_APPLIED
    return Outcome.UNCERTAIN


def describe(error: BaseException) -> str:
    """``kind: message`` for a GrainError, ``Type: message`` for anything else."""
    if isinstance(error, GrainError):
        safe = " (retry-safe)" if error.retry_safe else ""
        return f"{type(error).__name__}/{error.kind}{safe}: {error.message[:200]}"
    return f"{type(error).__name__}: {str(error)[:200]}"


@dataclass
class Op:
    """One call of the load. ``op_id`` is empty for a read (``peek``)."""

    grain: str
    method: str
    op_id: str
    sent: float
    received: float = -1.0
    outcome: Outcome | None = None  # None while in flight
    error: str = ""
    silo: str = ""
    activation: str = ""

    def label(self) -> str:
        what = f"op {self.op_id}" if self.op_id else f"{self.method}"
        where = f" on {self.silo} activation {self.activation}" if self.activation else ""
        error = f" ({self.error})" if self.error else ""
        outcome = self.outcome.value if self.outcome else "in flight"
        return f"{what} {outcome} [sent {self.sent:.2f}s, answered {self.received:.2f}s]" \
               f"{where}{error}"


@dataclass
class Ledger:
    """Every op of one run, in the order they were sent."""

    ops: list[Op] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def new_op_id(self, writer: str) -> str:
        return f"{writer}.{next(self._ids)}"

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def appends(self, grain: str | None = None) -> list[Op]:
        return [o for o in self.ops if o.op_id and (grain is None or o.grain == grain)]

    def summary(self) -> str:
        outcomes = Counter(o.outcome.value if o.outcome else "in flight" for o in self.appends())
        peeks = sum(1 for o in self.ops if not o.op_id)
        lines = [f"{len(self.appends())} appends, {peeks} reads; appends by outcome: "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))]
        errors: Counter[str] = Counter()
        example: dict[str, str] = {}
        for op in self.ops:
            if op.error:
                kind = op.error.split(":", 1)[0]
                errors[kind] += 1
                example.setdefault(kind, op.label())
        for kind, count in errors.most_common():
            lines.append(f"  {count} x {kind}, e.g. {example[kind]}")
        return "\n".join(lines)
