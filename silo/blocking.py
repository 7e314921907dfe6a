"""A bounded thread pool per silo for grains' synchronous work (``Grain.run_blocking``).

Why: a synchronous SDK call (most LLM clients have one) made directly in a grain
method blocks the event loop, and with it every other grain of the silo. Run
through this pool, it blocks one worker thread instead. The pool is bounded
(``BLOCKING_THREADS`` workers per silo); further calls wait for a free worker,
so a burst cannot start thousands of threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

BLOCKING_THREADS = 16


class BlockingPool:
    def __init__(self, threads: int = BLOCKING_THREADS, name: str = "grainery-blocking") -> None:
        if threads < 1:
            raise ValueError("the blocking pool needs at least one thread")
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker; context variables travel with it."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Stop taking work; calls already running finish on their own threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
