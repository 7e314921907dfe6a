"""An in-memory twin of the membership, for in-process tests of the runtime.

One :class:`InMemoryCluster` holds the member table that several
:class:`InMemoryMembership` views share, with the same rules as the Redis one:
every change bumps the version, a dead or left incarnation never comes back,
and a silo that rejoins does so as a new incarnation. There is no clock: tests
fence, kill and leave silos explicitly, which is what makes them deterministic.
"""

from __future__ import annotations

import itertools

from grainery.client.routing import (
    ACTIVE,
    DEAD,
    FENCED,
    GONE_STATES,
    LEAVING,
    LEFT,
    MemberInfo,
    MembershipSnapshot,
    PlacementRing,
)


class InMemoryCluster:
    """The shared member table (the twin of the Redis hash)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.version = 0
        self._rows: dict[str, MemberInfo] = {}
        self._serial = itertools.count(1)

    def join(self, silo_id: str, address: str | None = None) -> InMemoryMembership:
        view = InMemoryMembership(self, silo_id, address or f"{silo_id}:7070")
        view.rejoin()
        return view

    def snapshot(self) -> MembershipSnapshot:
        return MembershipSnapshot(self.version, tuple(self._rows.values()), self.name)

    def _add(self, silo_id: str, address: str) -> MemberInfo:
        for incarnation in [i for i, m in self._rows.items() if m.silo_id == silo_id]:
            del self._rows[incarnation]  # a rejoin retires the old incarnation at once
        member = MemberInfo(silo_id, address, ACTIVE, float(next(self._serial)),
                            f"{silo_id}:{next(self._serial)}")
        self._rows[member.incarnation] = member
        self.version += 1
        return member

    def _set_state(self, incarnation: str, state: str) -> bool:
        """Change a live row's state; False when the row is gone or no longer live."""
        member = self._rows.get(incarnation)
        if member is None or member.state in GONE_STATES:
            return False
        self._rows[incarnation] = MemberInfo(
            member.silo_id, member.address, state, member.started_at, member.incarnation
        )
        self.version += 1
        return True

    def prune(self) -> int:
        """Delete dead and left rows (the Redis read does this after a retention)."""
        gone = [i for i, m in self._rows.items() if m.state in GONE_STATES]
        for incarnation in gone:
            del self._rows[incarnation]
        if gone:
            self.version += 1
        return len(gone)


class InMemoryMembership:
    """One silo's view; satisfies :class:`~silo.cluster.view.MembershipView`."""

    def __init__(self, cluster: InMemoryCluster, silo_id: str, address: str) -> None:
        self._cluster = cluster
        self.silo_id = silo_id
        self.address = address
        self.incarnation = ""
        self.state = FENCED
        self.snapshot = MembershipSnapshot(0, (), cluster.name)
        self.ring = PlacementRing(self.snapshot)
        self._gone: set[str] = set()

    @property
    def serving(self) -> bool:
        return self.state in (ACTIVE, LEAVING)

    def is_alive(self, incarnation: str) -> bool | None:
        if incarnation == self.incarnation:
            return self.state not in GONE_STATES
        if incarnation in self._gone:
            return False
        member = self.snapshot.by_incarnation(incarnation)
        return None if member is None else member.state not in GONE_STATES

    async def refresh(self) -> MembershipSnapshot:
        return self.adopt()

    def adopt(self) -> MembershipSnapshot:
        """Take the shared table's current view (what a heartbeat read does)."""
        snapshot = self._cluster.snapshot()
        known = {m.incarnation for m in snapshot.members}
        self._gone |= {m.incarnation for m in self.snapshot.members if m.incarnation not in known}
        self._gone |= {m.incarnation for m in snapshot.members if m.state in GONE_STATES}
        self.snapshot = snapshot
        self.ring = PlacementRing(snapshot)
        return snapshot

    # ----- what tests do to a silo ---------------------------------------------
    def rejoin(self) -> None:
        """Join (again) as a new incarnation."""
        self.incarnation = self._cluster._add(self.silo_id, self.address).incarnation
        self.state = ACTIVE
        self.adopt()

    def fence(self) -> None:
        """The silo lost its lease: it stops serving; the others see it dead."""
        self._cluster._set_state(self.incarnation, DEAD)
        self.state = FENCED

    def set_leaving(self) -> None:
        if self._cluster._set_state(self.incarnation, LEAVING):
            self.state = LEAVING

    def leave(self) -> None:
        self._cluster._set_state(self.incarnation, LEFT)
        self.state = LEFT
