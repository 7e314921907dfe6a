"""The recent events of one stream that its pump read, shared by the stream's subscriptions.

Why: the pump's one XREAD already brings every new event into the silo; a subscription
that is caught up takes its next events from here instead of asking Redis again, so
publish-to-hook latency is one XREAD plus the hook call. A subscription that is behind
(after a restart, a slow or failing hook) reads from Redis itself and catches up. Memory is
bounded: only events some subscription has not passed yet, at most RECENT per stream.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from grainery.silo.streams.names import StreamId, token_order
from grainery.silo.streams.store import Entry

RECENT = 1024


class Reader(Protocol):
    """A subscription as the feed sees it: where it is, and how to wake it."""

    position: str

    def wake(self) -> None:
        ...


class StreamFeed:
    def __init__(self, stream: StreamId, cursor: str) -> None:
        self.stream = stream
        self.cursor = cursor  # the newest token the pump has read
        self._base = token_order(cursor)  # every event after this one is in _recent
        self._recent: deque[Entry] = deque()
        self._readers: set[Reader] = set()

    def listen(self, reader: Reader) -> None:
        self._readers.add(reader)

    def unlisten(self, reader: Reader) -> None:
        self._readers.discard(reader)

    def __len__(self) -> int:
        return len(self._recent)

    def feed(self, entries: list[Entry]) -> None:
        """Events the pump read after ``cursor``, in order. Keeps only what a reader has not
        passed yet (at most RECENT events): a caught-up stream holds nothing here."""
        if not entries:
            return
        self._recent.extend(entries)
        self.cursor = entries[-1][0]
        oldest = min((token_order(r.position) for r in self._readers), default=None)
        recent = self._recent
        while recent and (len(recent) > RECENT or oldest is None
                          or token_order(recent[0][0]) <= oldest):
            self._base = token_order(recent.popleft()[0])
        for reader in self._readers:
            reader.wake()
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
