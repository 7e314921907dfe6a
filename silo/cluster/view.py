"""What the runtime needs from membership, as a Protocol.

The catalog, locator, dispatcher and directory sweeper depend on this view only, not on
Redis, so in-process tests can hand them the in-memory twin (:mod:`silo.cluster.memory`)
and the real silo hands them :class:`~silo.cluster.membership.MembershipService`.
"""

from __future__ import annotations

from typing import Protocol

from grainery.client.routing import MembershipSnapshot, PlacementRing


class MembershipView(Protocol):
    """This silo's identity and its current view of the cluster."""

    silo_id: str
    address: str
    incarnation: str  # this silo's current incarnation; changes when it rejoins after fencing
    state: str  # this silo's own membership state (joining, active, leaving, fenced, ...)
    snapshot: MembershipSnapshot
    ring: PlacementRing  # placement over the snapshot's active members

    @property
    def serving(self) -> bool:
        """False whenever this silo may not run grain code (fenced, lease not trusted, left)."""
        ...

    def is_alive(self, incarnation: str) -> bool | None:
        """True/False for a known incarnation; None when the view does not know it."""
        ...

    async def refresh(self) -> MembershipSnapshot:
        """Re-read the membership (a read that starts after this call) and adopt it."""
        ...
