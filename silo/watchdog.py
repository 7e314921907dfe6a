"""Loop-lag watchdog: names the grain and method that blocked the event loop.

A callback on the loop stamps the time every ``threshold / 4`` seconds; a
thread checks the stamp. When it is older than ``threshold``, the loop is
blocked, and the thread looks at the loop thread's stack (``sys._current_frames``,
read while this thread holds the GIL) for the innermost frame running a method
of a grain instance: that is the turn that blocks. One warning per blocked
stretch, with how long it lasted once it ends.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from types import FrameType

from grainery.silo.grain import Grain

log = logging.getLogger("grainery.watchdog")

DEFAULT_THRESHOLD = 1.0  # seconds the loop may be blocked before a warning


def blocking_turn(frame: FrameType | None) -> str:
    """'Type/key.method (file:line)' of the innermost grain method on the stack; else the
    innermost frame."""
    innermost = frame
    while frame is not None:
        code = frame.f_code
        if code.co_argcount and code.co_varnames[0] == "self":
            owner = frame.f_locals.get("self")
            if isinstance(owner, Grain) and hasattr(owner, "_ctx"):
                return (f"{owner.grain_type}/{owner.key}.{code.co_name} "
                        f"({code.co_filename}:{frame.f_lineno})")
        frame = frame.f_back
    if innermost is None:
        return "unknown code"
    code = innermost.f_code
    return f"{code.co_name} ({code.co_filename}:{innermost.f_lineno}), not a grain method"


class LoopWatchdog:
    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if threshold <= 0:
            raise ValueError("watchdog threshold must be positive")
        self.threshold = threshold
        self._stamp = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="grainery-watchdog",
                                        daemon=True)

    def start(self) -> None:
        """Call on the event loop to watch."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread.is_alive():
            self._thread.join(self.threshold)

    def _tick(self) -> None:
        self._stamp = time.monotonic()
        assert self._loop is not None
        self._timer = self._loop.call_later(self.threshold / 4, self._tick)

    def _watch(self) -> None:
        blocked_since: float | None = None
        while not self._stopping.wait(self.threshold / 4):
            stamp = self._stamp
            lag = time.monotonic() - stamp
            if lag > self.threshold and blocked_since is None:
                blocked_since = stamp
                frame = sys._current_frames().get(self._loop_thread)
                log.warning(
                    "event loop blocked for %.1fs (threshold %.1fs) by %s; "
                    "use `await self.run_blocking(fn, *args)` for synchronous work",
                    lag, self.threshold, blocking_turn(frame),
                )
                del frame
            elif blocked_since is not None and stamp > blocked_since:
                log.warning("event loop unblocked after %.1fs", stamp - blocked_since)
                blocked_since = None
