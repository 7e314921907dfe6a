"""Partitions of a cluster-wide service (reminders, streams), owned on the placement ring.

Work that is not a call (firing reminders, pumping streams) must be spread over the silos
and move with the ring like grains do, without any silo scanning all of it. A service cuts
its items into a fixed number of partitions (an item's partition is a stable hash of its
name); each partition is owned by the silo that the ring picks for the partition's own ring
key, so a join moves about 1/N of the partitions to the newcomer and a silo's death hands its
partitions to the survivors as soon as their membership view drops it.

Two silos may both believe they own a partition for a moment while their views differ (a
join seen by one before the other): services make that harmless with an atomic claim in
the store (reminders) or a lease (streams); this module only answers "whose turn is it".
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from grainery.client.routing import ACTIVE, GrainId
from grainery.silo.cluster.view import MembershipView

PartitionsChanged = Callable[[frozenset[int], frozenset[int]], None]  # (gained, lost)


def partition_of(name: str, count: int) -> int:
    """The partition of an item (e.g. ``"Type/key"``): stable across processes and versions."""
    return zlib.crc32(name.encode()) % count


class PartitionOwnership:
    """Which of ``service``'s ``count`` partitions this silo owns, from its membership view."""

    def __init__(self, service: str, count: int, membership: MembershipView) -> None:
        if count < 1:
            raise ValueError(f"a service needs at least one partition, not {count}")
        self.service = service
        self.count = count
        self._membership = membership
        self._owned: frozenset[int] = frozenset()
        self._listeners: list[PartitionsChanged] = []

    def partition_of(self, name: str) -> int:
        return partition_of(name, self.count)

    def ring_key(self, partition: int) -> GrainId:
        return GrainId(f"$partition/{self.service}", str(partition))

    def owner_incarnation(self, partition: int) -> str | None:
        """The incarnation the current ring gives the partition to (None: no active silo)."""
        owner = self._membership.ring.owner(self.ring_key(partition))
        return owner.incarnation if owner is not None else None

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    def on_change(self, listener: PartitionsChanged) -> None:
        """``listener(gained, lost)`` after each update that changed what this silo owns."""
        self._listeners.append(listener)

    def update(self) -> tuple[frozenset[int], frozenset[int]]:
        """Recompute from the membership view (call on every view change, on fencing and on
        rejoining); a silo that is not an active, serving member owns nothing."""
        membership = self._membership
        me = membership.incarnation
        if membership.serving and membership.state == ACTIVE:
            owned = frozenset(
                p for p in range(self.count) if self.owner_incarnation(p) == me
            )
        else:
            owned = frozenset()
        gained, lost = owned - self._owned, self._owned - owned
        self._owned = owned
        if gained or lost:
            for listener in list(self._listeners):
                listener(gained, lost)
        return gained, lost
