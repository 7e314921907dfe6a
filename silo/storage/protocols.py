"""The two storage interfaces the runtime depends on, as small Protocols.

Why Protocols: the catalog, locator and activations only need these few
operations, so they can run in-process against the in-memory twins in
:mod:`silo.memory_store` (fast tests without processes), while the silo wires the
Redis implementations. Both implementations pass one conformance suite
(tests/integration/test_persistence_conformance.py), so they keep the same
semantics, fencing and ETag checks included.
"""

from __future__ import annotations

from typing import Protocol

from grainery.client.routing import GrainId
from grainery.silo.cluster.directory import DirectoryEntry, Registration
from grainery.silo.storage.redis_state import Fence, StoredState


class GrainStorage(Protocol):
    """Grain state with optimistic concurrency and fencing.

    ``write``/``clear`` succeed only if ``fence`` names the grain's current activation
    (else ActivationFencedError) and ``etag`` is the current version (else
    StaleStateError); they return the new ETag. An empty payload means nothing is stored.
    """

    async def read(self, grain: GrainId) -> StoredState: ...

    async def write(self, grain: GrainId, payload: bytes, etag: str, fence: Fence) -> str: ...

    async def clear(self, grain: GrainId, etag: str, fence: Fence) -> str: ...


class GrainDirectory(Protocol):
    """Grain -> owning activation, with atomic registration and dead-silo sweeping.

    ``register`` wins if the entry is absent, names the caller's incarnation, or names
    ``dead``; each win has a new activation id and returns the stored state.
    ``unregister`` deletes the entry only if it names ``fence``'s activation.
    ``sweep`` deletes every entry a dead incarnation still holds.
    """

    async def register(
        self, grain: GrainId, incarnation: str, silo_id: str, address: str, dead: str = ""
    ) -> Registration: ...

    async def lookup(self, grain: GrainId) -> DirectoryEntry | None: ...

    async def unregister(self, grain: GrainId, fence: Fence) -> bool: ...

    async def registrants(self) -> list[str]: ...

    async def sweep(self, incarnation: str) -> int: ...
