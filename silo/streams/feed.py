"""The recent events of one stream that its pump read, shared by the stream's subscriptions.

Why: the pump's one XREAD already brings every new event into the silo; a subscription
that is caught up takes its next events from here instead of asking Redis again, so
publish-to-hook latency is one XREAD plus the hook call. A subscription that is behind
(after a restart, a slow or failing hook) reads from Redis itself and catches up. Memory is
bounded: at most RECENT events per stream are kept.
"""

from __future__ import annotations

import asyncio
from collections import deque

from grainery.silo.streams.names import StreamId, token_order
from grainery.silo.streams.store import Entry

RECENT = 1024


class StreamFeed:
    def __init__(self, stream: StreamId, cursor: str) -> None:
        self.stream = stream
        self.cursor = cursor  # the newest token the pump has read
        self._base = token_order(cursor)  # every event after this one is in _recent
        self._recent: deque[Entry] = deque()
        self._listeners: set[asyncio.Event] = set()

    def listen(self, wake: asyncio.Event) -> None:
        self._listeners.add(wake)

    def unlisten(self, wake: asyncio.Event) -> None:
        self._listeners.discard(wake)

    def feed(self, entries: list[Entry]) -> None:
        """Events the pump read after ``cursor``, in order."""
        if not entries:
            return
        self._recent.extend(entries)
        while len(self._recent) > RECENT:
            self._base = token_order(self._recent.popleft()[0])
        self.cursor = entries[-1][0]
        for wake in self._listeners:
            wake.set()

    def after(self, position: str, limit: int) -> list[Entry] | None:
        """The (up to ``limit``) events after ``position``, or None when they are older than
        what is kept here (read them from Redis)."""
        after = token_order(position)
        if after < self._base:
            return None
        start = len(self._recent)
        while start > 0 and token_order(self._recent[start - 1][0]) > after:
            start -= 1
        end = min(len(self._recent), start + limit)
        return [self._recent[i] for i in range(start, end)]
