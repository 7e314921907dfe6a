"""`grainery status`: which state a member row shows when the silo reports its own."""

from __future__ import annotations

from grainery.silo.cli import _shown_state


def test_a_silo_that_fenced_itself_shows_fenced() -> None:
    assert _shown_state("active", True, "fenced") == "fenced"  # Redis has not noticed yet
    assert _shown_state("dead", True, "fenced") == "fenced"  # Redis declared it dead


def test_the_row_wins_when_the_answer_is_not_that_silo() -> None:
    assert _shown_state("dead", True, "active") == "dead"  # a newer incarnation answered
    assert _shown_state("active", False, "fenced") == "active"  # another silo at that address
    assert _shown_state("active", True, "") == "active"
    assert _shown_state("leaving", True, "leaving") == "leaving"
