"""Waking a grain whose durable run is unfinished, without a caller: the ``$durable`` runtime
reminder (silo/reminders/runtime.py).

While a run is unfinished its grain keeps one runtime reminder, ``$durable``, ticking every
WAKE_PERIOD seconds: registered before the run's ``$run`` entry is written (so no run ever
exists without it), removed once its ``$end`` entry is. A tick is a system call to the grain:
wherever the grain lives it is activated if it is not, and an activation resumes the
unfinished run at once (runtime.resume_on_activation). So when the silo running a run dies,
the reminder's next tick, fired by whichever silo owns the reminder's partition now,
activates the grain on a live silo and the run continues there: within WAKE_PERIOD seconds
plus the time the cluster takes to declare the silo dead. The ticks also count as activity,
so a grain with an unfinished run (waiting for a signal, sleeping) is never collected as
idle and its waits and sleeps end on time.

A tick that finds no unfinished run (it ended, or was never written) removes the reminder.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from grainery.silo.reminders.runtime import RUNTIME_REMINDERS

if TYPE_CHECKING:
    from grainery.silo.grain import Grain

log = logging.getLogger("grainery.durable")

REMINDER = "$durable"
WAKE_PERIOD = 5.0  # seconds between ticks while a run is unfinished


async def keep(grain: Grain) -> None:
    """Register the grain's ``$durable`` reminder (idempotent: the same name is updated).
    Raises if it cannot be stored: a run must not start without it."""
    await grain._register_runtime_reminder(REMINDER, WAKE_PERIOD, WAKE_PERIOD)


async def drop(grain: Grain) -> None:
    """Remove it once the run ended; a failure is only logged (the next tick removes it)."""
    try:
        await grain._unregister_runtime_reminder(REMINDER)
    except Exception as exc:  # noqa: BLE001 - a stale reminder removes itself on its next tick
        log.warning("could not remove the %s reminder of %s: %s", REMINDER,
                    grain._ctx.grain_id, exc)


async def on_tick(grain: Grain, name: str, tick: Any) -> None:
    """The tick: the grain is active now (which resumed an unfinished run); if it has none,
    the reminder is no longer needed."""
    from grainery.silo.durable.decorator import durable_methods
    from grainery.silo.durable.runtime import runtime_of

    if not durable_methods(type(grain)):
        await drop(grain)
        return
    runtime = runtime_of(grain)
    await runtime.ready()
    if runtime.run is None:
        await drop(grain)


RUNTIME_REMINDERS[REMINDER] = on_tick
