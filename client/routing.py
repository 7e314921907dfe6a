"""Where a grain lives: membership snapshots, the hash ring, and a location cache.

Silos and clients compute placement the same way: the same uhashring ring built
from the same membership snapshot gives the same owner for a grain, so a client
can call the owning silo directly (zero hops). Placement only *suggests*; the
silo-side directory decides, and every response names the silo that really ran
the call, which the location cache remembers.

Stateless workers are the exception: any silo runs them locally, so sending them to the
ring owner would pile a fan-out onto one silo. A response flagged ``stateless_worker``
marks its grain type, and from then on the router spreads that type's calls round-robin
over the active silos.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field

from uhashring import HashRing

ACTIVE = "active"
LEAVING = "leaving"
DEAD = "dead"  # lease lapsed (crash, partition, pause): declared by the cluster
LEFT = "left"  # left gracefully after draining; placement treats it exactly like DEAD
FENCED = "fenced"  # a silo's own view of itself after self-fencing (until it rejoins)
GONE_STATES = frozenset({DEAD, LEFT, FENCED})  # no longer hosts grains


@dataclass(frozen=True)
class GrainId:
    grain_type: str
    key: str

    def ring_key(self) -> str:
        return f"{self.grain_type}/{self.key}"

    def __str__(self) -> str:
        return f"{self.grain_type}/{self.key}"


@dataclass(frozen=True)
class MemberInfo:
    silo_id: str
    address: str
    state: str
    started_at: float
    incarnation: str


@dataclass(frozen=True)
class MembershipSnapshot:
    """An immutable, versioned view of the cluster. Newer versions replace older ones."""

    version: int
    members: tuple[MemberInfo, ...]
    cluster: str = ""
    active: tuple[MemberInfo, ...] = field(init=False)

    def __post_init__(self) -> None:
        live = tuple(sorted((m for m in self.members if m.state == ACTIVE), key=_by_id))
        object.__setattr__(self, "active", live)

    def by_id(self, silo_id: str) -> MemberInfo | None:
        return next((m for m in self.members if m.silo_id == silo_id), None)

    def by_incarnation(self, incarnation: str) -> MemberInfo | None:
        return next((m for m in self.members if m.incarnation == incarnation), None)


def _by_id(member: MemberInfo) -> str:
    return member.silo_id


EMPTY_SNAPSHOT = MembershipSnapshot(version=0, members=())


class PlacementRing:
    """Consistent-hash placement over the *active* members of one snapshot."""

    def __init__(self, snapshot: MembershipSnapshot) -> None:
        self.snapshot = snapshot
        self._members = {m.silo_id: m for m in snapshot.active}
        self._ring = HashRing(nodes=sorted(self._members)) if self._members else None

    def owner(self, grain: GrainId) -> MemberInfo | None:
        if self._ring is None:
            return None
        return self._members[self._ring.get_node(grain.ring_key())]

    def shares(self) -> dict[str, float]:
        """Fraction of the ring each member owns (for `grainery status`)."""
        if self._ring is None:
            return {}
        weights = self._ring.distribution
        total = sum(weights.values()) or 1
        return {node: count / total for node, count in weights.items()}


class Router:
    """Picks the silo address for a call: cached location, else the ring owner, else a seed;
    for a grain type known to be a stateless worker, the next active silo in turn.

    Invariant: cached locations only point at members that are active in the
    current snapshot; a membership change drops the rest. Stateless worker grains are
    never cached (any silo serves them).
    """

    def __init__(self, seeds: list[str], cache_size: int = 100_000) -> None:
        self.seeds = list(seeds)
        self.ring = PlacementRing(EMPTY_SNAPSHOT)
        self._cache: OrderedDict[GrainId, str] = OrderedDict()
        self._cache_size = cache_size
        self._seed_index = 0
        self._stateless: set[str] = set()
        # Where the round-robin over the active silos is; a random start, so that many
        # clients starting together do not all begin with the same silo.
        self._spread_index = random.randrange(1 << 16)

    @property
    def snapshot(self) -> MembershipSnapshot:
        return self.ring.snapshot

    def update(self, snapshot: MembershipSnapshot) -> bool:
        """Adopt a newer snapshot; returns False (and keeps the old one) when it is not newer."""
        if snapshot.version <= self.snapshot.version and self.snapshot.members:
            return False
        self.ring = PlacementRing(snapshot)
        live = {m.address for m in snapshot.active}
        for grain in [g for g, address in self._cache.items() if address not in live]:
            del self._cache[grain]
        return True

    def route(self, grain: GrainId) -> str:
        cached = self._cache.get(grain)
        if cached is not None:
            return cached
        if grain.grain_type in self._stateless:
            return self.spread()
        owner = self.ring.owner(grain)
        if owner is not None:
            return owner.address
        return self.next_seed()

    def spread(self) -> str:
        """The next active silo in turn (a seed while no member is known)."""
        active = self.snapshot.active
        if not active:
            return self.next_seed()
        self._spread_index += 1
        return active[self._spread_index % len(active)].address

    def mark_stateless(self, grain_type: str) -> None:
        """``grain_type`` is a stateless worker: spread its calls from now on (and forget
        any location cached for its grains)."""
        if grain_type in self._stateless:
            return
        self._stateless.add(grain_type)
        for grain in [g for g in self._cache if g.grain_type == grain_type]:
            del self._cache[grain]

    def is_stateless(self, grain_type: str) -> bool:
        return grain_type in self._stateless

    def next_seed(self) -> str:
        self._seed_index = (self._seed_index + 1) % len(self.seeds)
        return self.seeds[self._seed_index]

    def learn(self, grain: GrainId, address: str) -> None:
        if not address or grain.grain_type in self._stateless:
            return  # a stateless worker is served wherever it is sent: nothing to remember
        owner = self.ring.owner(grain)
        if owner is not None and owner.address == address:
            self._cache.pop(grain, None)  # the ring already says so; keep the cache small
            return
        self._cache[grain] = address
        self._cache.move_to_end(grain)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def forget(self, grain: GrainId) -> None:
        self._cache.pop(grain, None)

    def addresses(self) -> list[str]:
        """Every address worth asking for membership: active members first, then seeds."""
        known = [m.address for m in self.snapshot.active]
        return known + [s for s in self.seeds if s not in known]
