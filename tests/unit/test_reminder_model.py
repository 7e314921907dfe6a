"""Reminders' pure rules (silo/reminders/model.py, service.outcome_of, runtime handlers): the
bounds of a definition, the next due time after a late tick (one late tick, never a burst),
the retry backoff, how a failed delivery is completed, and the tick handed to grain code."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest

from grainery.client.errors import (
    DeadlineExceededError,
    GrainApplicationError,
    SiloUnavailableError,
    UnknownGrainTypeError,
    UnknownMethodError,
)
from grainery.silo.grain import Grain
from grainery.silo.registry import hook_methods
from grainery.silo.reminders import runtime
from grainery.silo.reminders.model import (
    MAX_NAME_CHARS,
    MAX_RETRY_DELAY,
    ReminderTick,
    check_name,
    check_schedule,
    member_of,
    next_due,
    parse_member,
    retry_delay_ms,
)
from grainery.silo.reminders.service import outcome_of

YEAR = 366 * 24 * 3600


@pytest.mark.parametrize("due, period", [
    (-1, 60), (YEAR + 1, 60), (math.nan, 60), (True, 60), ("5", 60), (None, 60),
    (0, 0), (0, 0.5), (0, -60), (0, YEAR + 1), (0, math.inf), (0, math.nan), (0, "60"),
])
def test_a_schedule_out_of_bounds_is_a_value_error(due: Any, period: Any) -> None:
    with pytest.raises(ValueError, match=r"reminder (due|period)"):
        check_schedule(due, period)


def test_schedule_bounds_are_inclusive_and_in_milliseconds() -> None:
    assert check_schedule(0, 1) == (0, 1000)
    assert check_schedule(YEAR, YEAR) == (YEAR * 1000, YEAR * 1000)
    assert check_schedule(1.5, 2.25) == (1500, 2250)


@pytest.mark.parametrize("name", ["", "   ", "x" * (MAX_NAME_CHARS + 1), "a\nb", 7, None])
def test_a_bad_name_is_a_value_error(name: Any) -> None:
    with pytest.raises(ValueError, match="reminder name"):
        check_name(name)


def test_dollar_names_belong_to_the_runtime() -> None:
    with pytest.raises(ValueError, match="reserved for the runtime"):
        check_name("$durable")
    assert check_name("$durable", runtime=True) == "$durable"
    with pytest.raises(ValueError, match="starts with"):
        check_name("durable", runtime=True)
    assert check_name("x" * MAX_NAME_CHARS) == "x" * MAX_NAME_CHARS


def test_the_next_tick_follows_the_phase_and_skips_missed_periods() -> None:
    assert next_due(10_000, 1_000, 10_200) == 11_000  # on time: one period later
    assert next_due(10_000, 1_000, 11_000) == 12_000  # exactly at the next instant: past it
    # 3.5 periods late: ONE late tick was delivered; the next is the first instant ahead,
    # on the original phase (not 11_000, 12_000, 13_000 in a burst).
    assert next_due(10_000, 1_000, 13_500) == 14_000
    for now in range(10_000, 30_000, 137):
        following = next_due(10_000, 700, now)
        assert now < following <= now + 700 and (following - 10_000) % 700 == 0


def test_retry_backoff_doubles_and_is_capped_by_the_period_and_the_maximum() -> None:
    assert [retry_delay_ms(a, 3_600_000) for a in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]
    assert retry_delay_ms(20, 3_600_000) == MAX_RETRY_DELAY * 1000
    assert retry_delay_ms(5, 3_000) == 3_000  # never past the next tick


def test_a_failed_delivery_is_retried_only_when_it_may_not_have_run() -> None:
    assert outcome_of(UnknownGrainTypeError("gone")) == "undeliverable"
    assert outcome_of(UnknownMethodError("no hook")) == "undeliverable"
    missing = GrainApplicationError("no handler", "UnknownRuntimeReminderError")
    assert outcome_of(missing) == "undeliverable"
    assert outcome_of(GrainApplicationError("boom", "RuntimeError")) == "failed"
    assert outcome_of(SiloUnavailableError("draining")) == "retry"
    assert outcome_of(DeadlineExceededError("slow")) == "retry"
    assert outcome_of(OSError("anything else")) == "retry"


def test_members_are_unambiguous_whatever_the_text_holds() -> None:
    for parts in [("T", "a/b", "n"), ("T", 'k"\\', "|x|"), ("T", "ключ", "$durable:1")]:
        assert parse_member(member_of(*parts)) == parts
    assert member_of("T", "a", "b/c") != member_of("T", "a/b", "c")


class Ticked(Grain):
    async def receive_reminder(self, name: str, tick: ReminderTick) -> tuple[str, float]:
        assert isinstance(tick, ReminderTick)
        return name, tick.lateness


async def test_the_hook_receives_a_tick_value_decoded_from_json() -> None:
    grain = Ticked()
    wire = {"scheduled": 100.0, "actual": 100.25, "period": 60.0}
    assert await grain.receive_reminder("r", wire) == ("r", 0.25)  # type: ignore[arg-type]
    spec = hook_methods(Ticked)["receive_reminder"]
    assert list(inspect.signature(spec.func).parameters) == ["self", "name", "tick"]
    with pytest.raises(TypeError, match="JSON object"):
        ReminderTick.from_json([1, 2, 3])


class Hooks:
    """A mixin (not a Grain) that holds the hook."""

    async def receive_reminder(self, name: str, tick: ReminderTick) -> float:
        return tick.period


class Mixed(Hooks, Grain):
    pass


class Sub(Ticked):
    pass


async def test_an_inherited_hook_also_receives_a_tick_value_and_is_wrapped_once() -> None:
    wire = {"scheduled": 1.0, "actual": 2.0, "period": 7.0}
    assert await Mixed().receive_reminder("r", wire) == 7.0  # type: ignore[arg-type]
    assert await Sub().receive_reminder("r", wire) == ("r", 1.0)  # type: ignore[arg-type]
    assert Sub.receive_reminder is Ticked.receive_reminder


async def test_runtime_reminders_go_to_the_handler_registered_for_their_name() -> None:
    seen: list[tuple[str, float]] = []

    async def handler(grain: Grain, name: str, tick: ReminderTick) -> None:
        seen.append((name, tick.period))

    runtime.RUNTIME_REMINDERS["$test-handler"] = handler
    try:
        grain = Ticked()
        tick = {"scheduled": 1.0, "actual": 1.0, "period": 5.0}
        await grain.on_runtime_reminder("$test-handler:order-7", tick)  # type: ignore[arg-type]
        await grain.on_runtime_reminder("$test-handler", tick)  # type: ignore[arg-type]
        assert seen == [("$test-handler:order-7", 5.0), ("$test-handler", 5.0)]
        with pytest.raises(runtime.UnknownRuntimeReminderError):
            await grain.on_runtime_reminder("$nobody", tick)  # type: ignore[arg-type]
    finally:
        del runtime.RUNTIME_REMINDERS["$test-handler"]
