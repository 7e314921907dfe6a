"""In-memory twins of the Redis storage and directory, for in-process tests.

Same semantics as :mod:`silo.storage` and :mod:`silo.cluster.directory` (checked by
the shared conformance suite): activation ids as fencing tokens, ETags
``<activation id>:<n>``, cleared state deleted with its ETag kept in the live
directory entry, per-incarnation indexes for sweeping. Each operation runs without
an ``await`` in between, which gives the atomicity the Lua scripts give in Redis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from grainery.client.errors import ActivationFencedError, StaleStateError
from grainery.client.routing import GrainId
from grainery.silo.cluster.directory import DirectoryEntry, Registration, new_nonce
from grainery.silo.storage.redis_state import Fence, StoredState
from grainery.silo.storage.state_codec import EMPTY


@dataclass
class _Entry:
    incarnation: str
    silo_id: str
    address: str
    activation: str
    writes: int = 0
    cleared: str = ""

    def public(self) -> DirectoryEntry:
        return DirectoryEntry(self.incarnation, self.silo_id, self.address, self.activation)


@dataclass
class MemoryStore:
    """What a Redis database would hold, shared by one storage and one directory twin."""

    entries: dict[GrainId, _Entry] = field(default_factory=dict)
    states: dict[GrainId, tuple[bytes, str]] = field(default_factory=dict)
    indexes: dict[str, set[GrainId]] = field(default_factory=dict)
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def key_count(self) -> int:
        """Keys the Redis layout would hold (entries, states, non-empty indexes, registrants)."""
        live = sum(1 for members in self.indexes.values() if members)
        return len(self.entries) + len(self.states) + live + (1 if self.indexes else 0)

    def _activation_id(self) -> str:
        return f"{next(self._sequence):016d}-{new_nonce()}"

    def _current_etag(self, grain: GrainId, entry: _Entry | None) -> str:
        stored = self.states.get(grain)
        if stored is not None:
            return stored[1]
        return entry.cleared if entry is not None else ""


class MemoryGrainStorage:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def read(self, grain: GrainId) -> StoredState:
        raw = self.store.states.get(grain, (EMPTY, ""))[0]
        etag = self.store._current_etag(grain, self.store.entries.get(grain))
        return StoredState.decode(raw, etag)

    async def write(self, grain: GrainId, payload: bytes, etag: str, fence: Fence) -> str:
        return self._compare_and_set(grain, payload, etag, fence, "write")

    async def clear(self, grain: GrainId, etag: str, fence: Fence) -> str:
        return self._compare_and_set(grain, EMPTY, etag, fence, "clear")

    def _compare_and_set(
        self, grain: GrainId, payload: bytes, etag: str, fence: Fence, operation: str
    ) -> str:
        entry = self.store.entries.get(grain)
        if entry is None or entry.activation != fence.activation:
            raise ActivationFencedError(
                f"state {operation} of {grain} refused: a newer activation owns the grain"
            )
        if self.store._current_etag(grain, entry) != etag:
            raise StaleStateError(
                f"stale state {operation} of {grain}: stored version changed since it was read"
            )
        entry.writes += 1
        new = f"{entry.activation}:{entry.writes}"
        if payload:
            self.store.states[grain] = (payload, new)
        else:
            self.store.states.pop(grain, None)
            entry.cleared = new
        return new


class MemoryGrainDirectory:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def register(
        self, grain: GrainId, incarnation: str, silo_id: str, address: str, dead: str = ""
    ) -> Registration:
        store = self.store
        store.indexes.setdefault(incarnation, set()).add(grain)
        current = store.entries.get(grain)
        if current is not None and current.incarnation not in (incarnation, dead):
            return Registration(False, current.public(), None)
        entry = _Entry(incarnation, silo_id, address, store._activation_id())
        store.entries[grain] = entry
        raw, etag = store.states.get(grain, (EMPTY, ""))
        return Registration(True, entry.public(), StoredState.decode(raw, etag))

    async def lookup(self, grain: GrainId) -> DirectoryEntry | None:
        entry = self.store.entries.get(grain)
        return entry.public() if entry is not None else None

    async def unregister(self, grain: GrainId, fence: Fence) -> bool:
        self.store.indexes.get(fence.incarnation, set()).discard(grain)
        entry = self.store.entries.get(grain)
        if entry is None or entry.activation != fence.activation:
            return False
        del self.store.entries[grain]
        return True

    async def registrants(self) -> list[str]:
        return sorted(self.store.indexes)

    async def sweep(self, incarnation: str) -> int:
        removed = 0
        for grain in self.store.indexes.pop(incarnation, set()):
            entry = self.store.entries.get(grain)
            if entry is not None and entry.incarnation == incarnation:
                del self.store.entries[grain]
                removed += 1
        return removed
