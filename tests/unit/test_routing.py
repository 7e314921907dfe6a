"""Placement and routing: snapshots, the hash ring, the router and its location cache."""

from __future__ import annotations

import dataclasses
import random

import pytest

from grainery.client.routing import (
    ACTIVE,
    DEAD,
    LEAVING,
    GrainId,
    MemberInfo,
    MembershipSnapshot,
    PlacementRing,
    Router,
)

GRAINS = [GrainId("Counter", f"k{i}") for i in range(2000)]


def member(n: int, state: str = ACTIVE) -> MemberInfo:
    return MemberInfo(f"silo{n}", f"10.0.0.{n}:7070", state, 1000.0 + n, f"silo{n}:inc")


def snapshot(version: int, *members: MemberInfo) -> MembershipSnapshot:
    return MembershipSnapshot(version=version, members=members, cluster="c")


# ----- GrainId and snapshots ------------------------------------------------
def test_grain_id() -> None:
    grain = GrainId("Counter", "a/b")
    assert grain.ring_key() == "Counter/a/b" == str(grain)
    assert grain == GrainId("Counter", "a/b")
    assert len({grain, GrainId("Counter", "a/b"), GrainId("Other", "a/b")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        grain.key = "c"  # type: ignore[misc]


def test_snapshot_active_members_are_sorted_and_filtered() -> None:
    snap = snapshot(3, member(3), member(1, DEAD), member(2), member(4, LEAVING), member(0))
    assert [m.silo_id for m in snap.active] == ["silo0", "silo2", "silo3"]
    assert snap.by_id("silo1") == member(1, DEAD)
    assert snap.by_incarnation("silo4:inc") == member(4, LEAVING)
    assert snap.by_id("nobody") is None and snap.by_incarnation("nobody") is None


def test_snapshot_is_independent_of_member_order() -> None:
    members = [member(i) for i in range(5)]
    shuffled = members[:]
    random.Random(7).shuffle(shuffled)
    assert snapshot(1, *members).active == snapshot(1, *shuffled).active


# ----- the ring ------------------------------------------------------------
def test_empty_ring_places_nothing() -> None:
    ring = PlacementRing(snapshot(0))
    assert ring.owner(GRAINS[0]) is None
    assert ring.shares() == {}


def test_single_member_owns_everything() -> None:
    ring = PlacementRing(snapshot(1, member(1)))
    assert {ring.owner(g) for g in GRAINS} == {member(1)}
    assert ring.shares() == {"silo1": pytest.approx(1.0)}


def test_rings_agree_whatever_the_member_order() -> None:
    members = [member(i) for i in range(1, 6)]
    reversed_ring = PlacementRing(snapshot(1, *reversed(members)))
    ring = PlacementRing(snapshot(1, *members))
    assert all(ring.owner(g) == reversed_ring.owner(g) for g in GRAINS)


def test_only_active_members_receive_grains() -> None:
    ring = PlacementRing(snapshot(2, member(1), member(2, LEAVING), member(3, DEAD), member(4)))
    owners = {ring.owner(g).silo_id for g in GRAINS}  # type: ignore[union-attr]
    assert owners == {"silo1", "silo4"}


def test_removing_a_member_only_moves_its_own_grains() -> None:
    four = PlacementRing(snapshot(1, *(member(i) for i in range(1, 5))))
    three = PlacementRing(snapshot(2, *(member(i) for i in range(1, 4)), member(4, DEAD)))
    moved = 0
    for grain in GRAINS:
        before, after = four.owner(grain), three.owner(grain)
        assert before is not None and after is not None
        if before.silo_id != "silo4":
            assert after == before, f"{grain} moved from {before.silo_id} to {after.silo_id}"
        else:
            moved += 1
    assert 0 < moved < len(GRAINS) / 2


def test_shares_cover_the_ring_and_are_balanced() -> None:
    shares = PlacementRing(snapshot(1, *(member(i) for i in range(1, 5)))).shares()
    assert set(shares) == {"silo1", "silo2", "silo3", "silo4"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(0.1 < share < 0.4 for share in shares.values()), shares


# ----- the router ----------------------------------------------------------
def test_router_without_membership_rotates_through_seeds() -> None:
    router = Router(["a:1", "b:2", "c:3"])
    seen = [router.route(GRAINS[0]) for _ in range(6)]
    assert set(seen) == {"a:1", "b:2", "c:3"}
    assert seen[:3] != [seen[0]] * 3


def test_router_follows_newer_snapshots_only() -> None:
    router = Router(["seed:1"])
    assert router.update(snapshot(5, member(1)))
    assert router.route(GRAINS[0]) == member(1).address
    assert not router.update(snapshot(4, member(2)))  # older: ignored
    assert not router.update(snapshot(5, member(2)))  # same version: ignored
    assert router.snapshot.version == 5
    assert router.route(GRAINS[0]) == member(1).address
    assert router.update(snapshot(6, member(2)))
    assert router.route(GRAINS[0]) == member(2).address


def test_router_routes_to_the_ring_owner() -> None:
    snap = snapshot(1, member(1), member(2), member(3))
    router = Router(["seed:1"])
    router.update(snap)
    ring = PlacementRing(snap)
    for grain in GRAINS[:200]:
        assert router.route(grain) == ring.owner(grain).address  # type: ignore[union-attr]


def test_location_cache_overrides_the_ring_until_forgotten() -> None:
    router = Router(["seed:1"])
    router.update(snapshot(1, member(1), member(2)))
    grain = GRAINS[0]
    owner = router.route(grain)
    other = member(2).address if owner == member(1).address else member(1).address
    router.learn(grain, other)
    assert router.route(grain) == other
    router.learn(grain, "")  # an empty address teaches nothing
    assert router.route(grain) == other
    router.forget(grain)
    assert router.route(grain) == owner


def test_learning_the_ring_owner_drops_the_cache_entry() -> None:
    router = Router(["seed:1"])
    router.update(snapshot(1, member(1), member(2)))
    grain = GRAINS[0]
    owner = router.route(grain)
    other = member(2).address if owner == member(1).address else member(1).address
    router.learn(grain, other)
    router.learn(grain, owner)
    assert router.route(grain) == owner
    assert grain not in router._cache


def test_membership_change_drops_locations_on_members_that_left() -> None:
    router = Router(["seed:1"])
    router.update(snapshot(1, member(1), member(2), member(3)))
    on_one = [g for g in GRAINS if router.route(g) == member(1).address]
    on_two, on_three = on_one[:5], on_one[5:10]
    for grain in on_two:
        router.learn(grain, member(2).address)
    for grain in on_three:
        router.learn(grain, member(3).address)
    router.update(snapshot(2, member(1), member(2), member(3, DEAD)))
    for grain in on_two:
        assert router.route(grain) == member(2).address
    for grain in on_three:
        assert router.route(grain) == member(1).address  # back to the ring owner


def test_location_cache_is_bounded_lru() -> None:
    router = Router(["seed:1"], cache_size=2)
    router.update(snapshot(1, member(1)))
    a, b, c = GRAINS[:3]
    router.learn(a, "x:1")
    router.learn(b, "x:2")
    router.learn(a, "x:1")  # refresh a: b is now the oldest
    router.learn(c, "x:3")
    assert router.route(a) == "x:1"
    assert router.route(c) == "x:3"
    assert router.route(b) == member(1).address


def test_addresses_lists_active_members_first_then_seeds() -> None:
    router = Router(["seed:1", member(1).address])
    router.update(snapshot(1, member(2), member(1), member(3, DEAD)))
    assert router.addresses() == [member(1).address, member(2).address, "seed:1"]


# ----- stateless workers ------------------------------------------------------
def test_a_stateless_worker_type_is_spread_round_robin_over_the_active_members() -> None:
    router = Router(["seed:1"])
    router.update(snapshot(1, member(1), member(2), member(3), member(4, LEAVING)))
    worker, other = GrainId("Tool", "k"), GrainId("Counter", "k")
    owner = router.ring.owner(worker)
    assert owner is not None and router.route(worker) == owner.address  # not known yet
    elsewhere = next(m.address for m in (member(1), member(2), member(3)) if m != owner)
    router.learn(worker, elsewhere)  # a location cached before the type was known
    assert router.route(worker) == elsewhere
    router.mark_stateless("Tool")
    assert router.is_stateless("Tool") and not router.is_stateless("Counter")
    picks = [router.route(worker) for _ in range(9)]
    assert sorted(picks) == sorted([m.address for m in (member(1), member(2), member(3))] * 3)
    assert all(picks[i] != picks[i + 1] for i in range(8))  # in turn, not by chance
    assert member(4).address not in picks  # a leaving silo gets none
    router.learn(worker, elsewhere)  # e.g. an answer without the flag: not pinned
    assert len({router.route(worker) for _ in range(3)}) == 3
    ring_owner = router.ring.owner(other)
    assert ring_owner is not None and router.route(other) == ring_owner.address


def test_a_stateless_worker_type_goes_to_the_seeds_while_no_member_is_known() -> None:
    router = Router(["seed:1", "seed:2"])
    router.mark_stateless("Tool")
    assert {router.route(GrainId("Tool", "k")) for _ in range(4)} == {"seed:1", "seed:2"}
