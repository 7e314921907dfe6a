"""What a reminder is: its public values, its limits, and the pure rules of its schedule.

Times stored in Redis are integer milliseconds of the *store's* clock (Lua reads ``TIME``), so
silos whose clocks differ still agree on what is due; values handed to grain code are Unix
seconds (floats).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MIN_PERIOD = 1.0  # seconds: agents poll, but a shorter period is a timer's job
MAX_PERIOD = 366 * 24 * 3600.0  # a year
MAX_DUE = 366 * 24 * 3600.0  # the first tick at most a year away
MAX_NAME_CHARS = 150
MAX_REMINDERS_PER_GRAIN = 100  # user reminders per grain ("$" runtime reminders not counted)
RUNTIME_PREFIX = "$"  # names reserved for the runtime (silo/reminders/runtime.py)
MAX_UNDELIVERABLE = 5  # consecutive ticks with no grain type or hook before it is disabled
MAX_RETRY_DELAY = 30.0  # seconds: the longest wait before a tick that could not run is retried


@dataclass(frozen=True, slots=True)
class ReminderTick:
    """What ``receive_reminder(name, tick)`` receives: ``scheduled`` (when the tick was due,
    Unix seconds of the store's clock), ``actual`` (when the serving silo sent it, its own
    clock), ``period`` (seconds). ``lateness`` = actual - scheduled."""

    scheduled: float
    actual: float
    period: float

    @property
    def lateness(self) -> float:
        return self.actual - self.scheduled

    def to_json(self) -> dict[str, float]:
        return {"scheduled": self.scheduled, "actual": self.actual, "period": self.period}

    @classmethod
    def from_json(cls, value: Any) -> ReminderTick:
        """The tick as it arrives through the system call (a JSON object)."""
        if isinstance(value, ReminderTick):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"a reminder tick is a JSON object, not {type(value).__name__}")
        return cls(float(value["scheduled"]), float(value["actual"]), float(value["period"]))


@dataclass(frozen=True, slots=True)
class ReminderInfo:
    """One reminder of a grain, as ``list_reminders()`` and ``grainery reminders`` show it.

    ``next_due``: Unix seconds of the next tick (while a tick is being delivered: the tick's
    scheduled time); None once disabled. ``failures``: consecutive undeliverable ticks.
    ``disabled``: why the reminder stopped firing ("" while it fires)."""

    name: str
    period: float
    next_due: float | None
    delivering: bool = False
    failures: int = 0
    disabled: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "period": self.period, "next_due": self.next_due,
                "delivering": self.delivering, "failures": self.failures,
                "disabled": self.disabled}


def _seconds(value: object, what: str, low: float, high: float, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"reminder {what} must be a number of seconds, not {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        bound = "(" if low_open else "["
        raise ValueError(
            f"reminder {what} must be in {bound}{low:g}, {high:.0f}] seconds, not {value!r}"
        )
    return float(value)


def check_name(name: object, runtime: bool = False) -> str:
    """A reminder name: non-empty text of at most MAX_NAME_CHARS characters; a name starting
    with ``$`` only for the runtime's own reminders, and then nothing else."""
    if not isinstance(name, str) or not name or not name.strip():
        raise ValueError(f"a reminder name is a non-empty string, not {name!r}")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(
            f"reminder name longer than {MAX_NAME_CHARS} characters ({len(name)})"
        )
    if any(ord(c) < 32 for c in name):
        raise ValueError(f"a reminder name may not hold control characters: {name!r}")
    if name.startswith(RUNTIME_PREFIX) and not runtime:
        raise ValueError(
            f"reminder names starting with {RUNTIME_PREFIX!r} are reserved for the runtime: "
            f"{name!r}"
        )
    if runtime and not name.startswith(RUNTIME_PREFIX):
        raise ValueError(f"a runtime reminder's name starts with {RUNTIME_PREFIX!r}: {name!r}")
    return name


def check_schedule(due: object, period: object) -> tuple[int, int]:
    """``due`` in [0, a year] and ``period`` in [1 s, a year]; returns both in milliseconds."""
    due_s = _seconds(due, "due", 0.0, MAX_DUE, low_open=False)
    period_s = _seconds(period, "period", MIN_PERIOD, MAX_PERIOD, low_open=False)
    return round(due_s * 1000), round(period_s * 1000)


def next_due(scheduled_ms: int, period_ms: int, now_ms: int) -> int:
    """The first instant ``scheduled + k * period`` (k >= 1) after ``now``: a late tick is
    followed by the next one on the original phase, missed periods are skipped (one late tick,
    never a burst). The Lua in ``scripts.COMPLETE`` computes the same; tests compare them."""
    following = scheduled_ms + period_ms
    if following > now_ms:
        return following
    return scheduled_ms + period_ms * ((now_ms - scheduled_ms) // period_ms + 1)


def retry_delay_ms(attempt: int, period_ms: int) -> int:
    """How long a tick that could not run waits before it is tried again: 1 s, 2 s, 4 s, ...
    capped at MAX_RETRY_DELAY and at the period (so a retry never waits past the next tick)."""
    delay = min(2.0 ** max(0, attempt - 1), MAX_RETRY_DELAY) * 1000
    return int(min(delay, period_ms))


def member_of(grain_type: str, key: str, name: str) -> str:
    """The due-set member naming one reminder (JSON: unambiguous whatever the text holds)."""
    return json.dumps([grain_type, key, name], separators=(",", ":"), ensure_ascii=False)


def parse_member(member: str) -> tuple[str, str, str]:
    grain_type, key, name = json.loads(member)
    return str(grain_type), str(key), str(name)
