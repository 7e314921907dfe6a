"""The grain side of reminders: what ``Grain.register_reminder`` and friends do, and the
decoding of a tick (it crosses the system call as JSON) into a :class:`ReminderTick`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grainery.silo.reminders.model import ReminderInfo, ReminderTick

if TYPE_CHECKING:
    from grainery.silo.grain import Grain
    from grainery.silo.reminders.registry import Reminders

Hook = Callable[..., Awaitable[Any]]


def decoding_tick(hook: Hook) -> Hook:
    """Wrap a grain class's ``receive_reminder`` so that its ``tick`` is a ReminderTick (the
    signature is kept: the registry reads the wrapped function's)."""
    if not inspect.iscoroutinefunction(hook) or getattr(hook, "__grainery_tick__", False):
        return hook

    @functools.wraps(hook)
    async def receive(self: Grain, name: str, tick: Any, *args: Any, **kwargs: Any) -> Any:
        return await hook(self, name, ReminderTick.from_json(tick), *args, **kwargs)

    receive.__grainery_tick__ = True  # type: ignore[attr-defined]
    return receive


def _service(grain: Grain) -> Reminders:
    reminders = getattr(grain._ctx, "reminders", None)
    if reminders is None:
        raise RuntimeError(
            f"reminders are not available to {type(grain).__qualname__}: stateless workers "
            f"have no identity a reminder could wake (and in-process test silos have no store)"
        )
    return reminders  # type: ignore[no-any-return]


async def register(grain: Grain, name: str, due: float, period: float, runtime: bool) -> float:
    grain_id = grain._ctx.grain_id
    return await _service(grain).register(grain_id.grain_type, grain_id.key, name, due, period,
                                          runtime=runtime)


async def unregister(grain: Grain, name: str, runtime: bool) -> bool:
    grain_id = grain._ctx.grain_id
    return await _service(grain).unregister(grain_id.grain_type, grain_id.key, name, runtime)


async def listing(grain: Grain, include_runtime: bool) -> list[ReminderInfo]:
    grain_id = grain._ctx.grain_id
    return await _service(grain).listing(grain_id.grain_type, grain_id.key, include_runtime)
