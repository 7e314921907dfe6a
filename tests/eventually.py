"""The one way tests wait: poll a condition until it holds, or fail naming what was awaited.

Never ``sleep`` to let something happen; wait for the condition that proves it happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Retry ``check`` until it returns a truthy value or raises nothing, within ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s; last seen: {last!r}")


def eventually_sync(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """The blocking twin of :func:`eventually`, for tests without an event loop."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout}s; last seen: {last!r}")


async def until(condition: Callable[[], object], what: str = "the condition",
                timeout: float = 5.0) -> None:
    """:func:`eventually` for a plain (non-async) condition, as in-process tests have."""

    async def check() -> bool:
        return bool(condition())

    await eventually(check, timeout, what)
