"""The chaos checks themselves, on made-up histories: each check fails on the history it
exists to catch and passes on a clean one; the schedule is fixed by its seed."""

from __future__ import annotations

import itertools

import pytest

from grainery.client.errors import (
    ActivationFailedError,
    DeadlineExceededError,
    SiloUnavailableError,
    StaleStateError,
    StorageUnavailableError,
    TransportError,
)
from tests.chaos.checks import (
    LOST,
    OVERLAP,
    PHANTOM,
    TWICE,
    UNKNOWN,
    check_settled,
    check_single_activation,
    check_stored,
)
from tests.chaos.ledger import Ledger, Op, Outcome, classify
from tests.chaos.schedule import Fault, steps


def op(op_id: str, outcome: Outcome | None, sent: float = 0.0, received: float = 1.0,
       activation: str = "a1", method: str = "append") -> Op:
    return Op("g", method, op_id, sent, received, outcome, "",
              "silo1" if outcome is Outcome.ACKED else "",
              activation if outcome is Outcome.ACKED else "")


def ledger_of(*ops: Op) -> Ledger:
    ledger = Ledger()
    for item in ops:
        ledger.add(item)
    return ledger


HISTORY = ledger_of(
    op("w.1", Outcome.ACKED), op("w.2", Outcome.NOT_RUN), op("w.3", Outcome.UNCERTAIN),
    op("w.4", Outcome.NOT_APPLIED), op("w.5", Outcome.UNCERTAIN),
)


def checks_failed(stored: list[str]) -> list[str]:
    return [v.check for v in check_stored(HISTORY, "g", stored, "Redis")]


def test_a_clean_history_passes() -> None:
    assert checks_failed(["w.1"]) == []
    assert checks_failed(["w.1", "w.3", "w.5"]) == []  # uncertain ops may be stored


def test_a_lost_acknowledged_op_fails_check_1() -> None:
    violations = check_stored(HISTORY, "g", ["w.3"], "Redis")
    assert [v.check for v in violations] == [LOST]
    message = str(violations[0])
    assert "ChaosProbe/g" in message and "w.1" in message and "['w.3']" in message


def test_an_op_stored_twice_fails_check_2() -> None:
    assert checks_failed(["w.1", "w.3", "w.3"]) == [TWICE]


def test_an_op_reported_as_not_run_or_not_applied_fails_check_3() -> None:
    assert checks_failed(["w.1", "w.2"]) == [PHANTOM]
    assert checks_failed(["w.1", "w.4"]) == [PHANTOM]
    assert checks_failed(["w.1", "x.9"]) == [UNKNOWN]


def test_an_op_still_in_flight_fails_the_settled_check() -> None:
    assert check_settled(ledger_of(op("w.1", None)))
    assert not check_settled(HISTORY)


def test_two_activations_that_alternate_fail_check_5() -> None:
    clean_handover = ledger_of(
        op("w.1", Outcome.ACKED, 0.0, 1.0, "a1"), op("w.2", Outcome.ACKED, 0.5, 2.0, "a1"),
        op("w.3", Outcome.ACKED, 1.5, 3.0, "a2"),  # sent before a1's last answer: no proof
        op("w.4", Outcome.ACKED, 3.5, 4.0, "a2"),
    )
    assert check_single_activation(clean_handover, "g") == []
    stale_reader = ledger_of(
        op("w.1", Outcome.ACKED, 0.0, 1.0, "a1"), op("w.2", Outcome.ACKED, 2.0, 3.0, "a2"),
        op("", Outcome.ACKED, 3.5, 4.0, "a1", method="peek"),  # a1 answers after a2 did
    )
    violations = check_single_activation(stale_reader, "g")
    assert [v.check for v in violations] == [OVERLAP]
    assert "a1" in str(violations[0]) and "a2" in str(violations[0])


@pytest.mark.parametrize(("error", "outcome"), [
    (SiloUnavailableError("x"), Outcome.NOT_RUN),
    (ActivationFailedError("x"), Outcome.NOT_RUN),
    (StaleStateError("x"), Outcome.NOT_APPLIED),
    (StorageUnavailableError("x"), Outcome.UNCERTAIN),
    (DeadlineExceededError("x"), Outcome.UNCERTAIN),
    (TransportError("x"), Outcome.UNCERTAIN),
    (RuntimeError("x"), Outcome.UNCERTAIN),
])
def test_outcomes_follow_what_the_caller_was_told(error: Exception, outcome: Outcome) -> None:
    assert classify(error) is outcome


def test_a_seed_fixes_the_schedule_and_the_first_steps_mix_every_fault() -> None:
    first = list(itertools.islice(steps(42, 4.0), 20))
    assert first == list(itertools.islice(steps(42, 4.0), 20))
    assert first != list(itertools.islice(steps(43, 4.0), 20))
    assert {s.fault for s in first[: len(Fault)]} == set(Fault)
    holds = [s.hold for s in first if s.fault in (Fault.PAUSE, Fault.PARTITION)]
    assert holds and min(holds) > 4.0  # past the lease: the grains must move
