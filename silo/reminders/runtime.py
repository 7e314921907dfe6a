"""Runtime reminders: reminders the runtime itself keeps for a grain (names start with ``$``).

Why: a durable agent (silo/durable/) must be woken after a crash without a caller; a reminder
does that. Such reminders never reach the grain's own ``receive_reminder``: they go to the
``on_runtime_reminder`` hook, which ``Grain`` defines once for all grains and which calls the
handler registered here for the name.

How another runtime feature uses it (no edit of silo/reminders/ needed):

- at import time, ``RUNTIME_REMINDERS["$durable"] = handler`` with
  ``async def handler(grain: Grain, name: str, tick: ReminderTick) -> None``; the handler runs
  as a turn of the grain (like ``receive_reminder``);
- a handler is looked up by the full name, then by the part before the first ``:``
  (``"$durable:order-7"`` -> ``"$durable"``), so one handler may serve many reminders;
- from grain code (an activation's turn), register or remove one with
  ``await self._register_runtime_reminder(name, due, period)`` and
  ``await self._unregister_runtime_reminder(name)`` (silo/grain.py); the same limits of due and
  period apply, and runtime reminders are not counted in the per-grain limit;
- ``list_reminders()`` leaves them out; ``list_reminders(include_runtime=True)`` and
  ``grainery reminders TYPE KEY --all`` show them.

A ``$`` tick with no handler (e.g. the module that registers it is not imported on the silo
that activates the grain) raises UnknownRuntimeReminderError, which the serving silo counts as
undeliverable (disabled after MAX_UNDELIVERABLE ticks, like a grain without a hook).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grainery.silo.reminders.model import ReminderTick

if TYPE_CHECKING:
    from grainery.silo.grain import Grain

RuntimeReminderHandler = Callable[["Grain", str, ReminderTick], Awaitable[Any]]

RUNTIME_REMINDERS: dict[str, RuntimeReminderHandler] = {}


class UnknownRuntimeReminderError(LookupError):
    """A ``$`` reminder fired for which no handler is registered on this silo."""


def runtime_handler(name: str) -> RuntimeReminderHandler:
    handler = RUNTIME_REMINDERS.get(name) or RUNTIME_REMINDERS.get(name.split(":", 1)[0])
    if handler is None:
        raise UnknownRuntimeReminderError(
            f"no runtime reminder handler for {name!r} (known: "
            f"{', '.join(sorted(RUNTIME_REMINDERS)) or 'none'})"
        )
    return handler


async def dispatch_runtime_reminder(grain: Grain, name: str, tick: Any) -> None:
    """The body of ``Grain.on_runtime_reminder``."""
    await runtime_handler(name)(grain, name, ReminderTick.from_json(tick))
