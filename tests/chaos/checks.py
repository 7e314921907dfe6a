"""The checks run after the faults stopped: pure functions of the ledger and the stored lists.

Each returns the violations it found; every violation names the check, the grain, the op
and what was seen, so one failing run says exactly what broke without a re-run.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from tests.chaos.ledger import Ledger, Op, Outcome

LOST = "1 acknowledged op lost"
TWICE = "2 op applied twice"
PHANTOM = "3 op applied that was reported as not run/not applied"
UNKNOWN = "3 op stored that no caller sent"
OVERLAP = "5 two activations served at once"


@dataclass(frozen=True)
class Violation:
    check: str
    grain: str
    detail: str

    def __str__(self) -> str:
        return f"[check {self.check}] ChaosProbe/{self.grain}: {self.detail}"


def _tail(stored: list[str]) -> str:
    return f"{len(stored)} ops stored, last 5: {stored[-5:]}"


def check_stored(ledger: Ledger, grain: str, stored: list[str], view: str) -> list[Violation]:
    """Checks 1-3 on one grain's stored list, as read through ``view`` (Redis or a client)."""
    found: list[Violation] = []
    counts = Counter(stored)
    sent = {op.op_id: op for op in ledger.appends(grain)}
    for op in sent.values():
        present = counts[op.op_id]
        if op.outcome is Outcome.ACKED and present == 0:
            found.append(Violation(LOST, grain, f"{op.label()}; missing from the list read "
                                               f"from {view} ({_tail(stored)})"))
        if op.outcome in (Outcome.NOT_RUN, Outcome.NOT_APPLIED) and present:
            found.append(Violation(PHANTOM, grain, f"{op.label()}; yet present in the list "
                                                  f"read from {view} ({_tail(stored)})"))
    for op_id, present in counts.items():
        sender = sent.get(op_id)
        if present > 1:
            seen = sender.label() if sender else "never sent to this grain"
            found.append(Violation(TWICE, grain, f"op {op_id} is stored {present} times in the "
                                                f"list read from {view}; caller saw: {seen}"))
        if sender is None:
            found.append(Violation(UNKNOWN, grain, f"op {op_id} is in the list read from {view} "
                                                  "but was never sent to this grain"))
    return found


def check_single_activation(ledger: Ledger, grain: str) -> list[Violation]:
    """Check 5, from the caller's side: two activations overlapped if each of them answered
    a call that was sent only after the other one had already answered a call.

    Sound without comparing clocks across processes: a call's service lies between its
    send and its answer on the caller's one clock. If activation A's life ended before B's
    began, every call A served was sent before any answer of B, so only one of the two
    conditions can hold.
    """
    served: dict[str, list[Op]] = {}
    for op in ledger.ops:
        if op.grain == grain and op.outcome is Outcome.ACKED and op.activation:
            served.setdefault(op.activation, []).append(op)
    found: list[Violation] = []
    for a, b in itertools.combinations(sorted(served), 2):
        a_after_b = _served_after(served[a], served[b])
        b_after_a = _served_after(served[b], served[a])
        if a_after_b is not None and b_after_a is not None:
            found.append(Violation(OVERLAP, grain, (
                f"activation {a} (on {served[a][0].silo}) answered {a_after_b[1].label()} "
                f"after activation {b} had answered {a_after_b[0].label()}, and activation {b} "
                f"(on {served[b][0].silo}) answered {b_after_a[1].label()} after activation {a} "
                f"had answered {b_after_a[0].label()}"
            )))
    return found


def _served_after(mine: list[Op], theirs: list[Op]) -> tuple[Op, Op] | None:
    """(their first answer, my call sent after it) if ``mine`` served such a call."""
    first_answer = min(theirs, key=lambda o: o.received)
    later = [o for o in mine if o.sent > first_answer.received]
    if not later:
        return None
    return first_answer, min(later, key=lambda o: o.sent)


def check_settled(ledger: Ledger) -> list[Violation]:
    """Every op has an outcome before the checks run (none left in flight)."""
    return [Violation("setup", o.grain, f"{o.label()}: still in flight at the end")
            for o in ledger.ops if o.outcome is None]
