"""Where a grain lives: its directory entry (if it is active), the silo the ring would place
it on, and the size of its stored state.

Read from the directory and the state store, like any silo would: the grain is not
activated by being looked at, and nothing of its state but its size is shown.
"""

from __future__ import annotations

from typing import Any

from grainery.client.errors import GrainError
from grainery.client.routing import GrainId
from grainery.silo.cluster.membership import MembershipService
from grainery.silo.registry import GrainRegistry
from grainery.silo.storage.protocols import GrainDirectory, GrainStorage

MAX_KEY_BYTES = 1024


class GrainLookupError(ValueError):
    """A lookup the caller got wrong (unknown type, bad key): answered 400/404, not 500."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def lookup(
    registry: GrainRegistry, directory: GrainDirectory, storage: GrainStorage,
    membership: MembershipService, grain_type: str, key: str,
) -> dict[str, Any]:
    if not grain_type or not key:
        raise GrainLookupError(400, "give both a grain type and a key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise GrainLookupError(400, f"grain key longer than {MAX_KEY_BYTES} bytes")
    try:
        kind = registry.get(grain_type)
    except GrainError:
        known = ", ".join(sorted(registry.names()))
        raise GrainLookupError(404, f"no grain type {grain_type!r} (known: {known})") from None
    grain = GrainId(grain_type, key)
    entry = await directory.lookup(grain)
    stored = await storage.read(grain)
    owner = membership.ring.owner(grain)
    active = entry is not None and bool(membership.is_alive(entry.incarnation))
    return {
        "grain_type": grain_type, "grain_key": key, "active": active,
        "silo_id": entry.silo_id if entry and active else None,
        "address": entry.address if entry and active else None,
        "activation_id": entry.activation if entry and active else None,
        "ring_owner": owner.silo_id if owner else None,
        "state_bytes": len(stored.raw), "etag": stored.etag or None,
        # A stateless worker has no directory entry: any silo runs its calls locally.
        "stateless_worker": kind.stateless_max_local is not None,
    }
