"""The in-memory membership twin keeps the Redis membership's rules."""

from __future__ import annotations

from grainery.client.routing import ACTIVE, DEAD, LEAVING, LEFT, GrainId
from grainery.silo.cluster.memory import InMemoryCluster, InMemoryMembership
from grainery.silo.cluster.view import MembershipView


def view(membership: MembershipView) -> MembershipView:
    """Type-checks that the twin satisfies the protocol the runtime depends on."""
    return membership


def states(member: InMemoryMembership) -> dict[str, str]:
    return {m.silo_id: m.state for m in member.adopt().members}


async def test_joined_silos_see_each_other_and_share_the_ring() -> None:
    cluster = InMemoryCluster()
    a, b = cluster.join("a"), cluster.join("b")
    await view(a).refresh()
    assert states(a) == states(b) == {"a": ACTIVE, "b": ACTIVE}
    grains = [GrainId("T", str(i)) for i in range(50)]
    owners = {a.ring.owner(g).silo_id for g in grains}  # type: ignore[union-attr]
    assert owners == {"a", "b"}
    assert all(a.ring.owner(g) == b.ring.owner(g) for g in grains)
    assert a.serving and a.is_alive(b.incarnation) is True


async def test_a_fenced_silo_stops_serving_and_rejoins_as_a_new_incarnation() -> None:
    cluster = InMemoryCluster()
    a, b = cluster.join("a"), cluster.join("b")
    old = a.incarnation
    version = cluster.version
    a.fence()
    assert not a.serving and cluster.version > version
    await b.refresh()
    assert b.is_alive(old) is False and states(b)["a"] == DEAD
    assert [m.silo_id for m in b.snapshot.active] == ["b"]
    a.rejoin()
    assert a.serving and a.incarnation != old
    await b.refresh()
    assert b.is_alive(a.incarnation) is True and b.is_alive(old) is False  # remembered


async def test_leaving_then_left_is_off_the_ring_and_never_comes_back() -> None:
    cluster = InMemoryCluster()
    a, b = cluster.join("a"), cluster.join("b")
    b.set_leaving()
    assert b.serving and states(a)["b"] == LEAVING
    assert [m.silo_id for m in a.snapshot.active] == ["a"]
    b.leave()
    assert not b.serving and states(a)["b"] == LEFT and a.is_alive(b.incarnation) is False
    b.set_leaving()  # a left incarnation cannot become live again
    assert states(a)["b"] == LEFT
    assert cluster.prune() == 1 and "b" not in states(a)
    assert a.is_alive(b.incarnation) is False  # pruned, still known to be gone


def test_an_unknown_incarnation_is_none_until_a_read_says_otherwise() -> None:
    cluster = InMemoryCluster()
    a = cluster.join("a")
    b = InMemoryMembership(cluster, "b", "b:1")
    b.rejoin()
    assert a.is_alive(b.incarnation) is None  # a has not read since b joined
    a.adopt()
    assert a.is_alive(b.incarnation) is True


def test_clients_and_the_ring_treat_left_like_dead() -> None:
    from grainery.client.routing import MemberInfo, MembershipSnapshot, PlacementRing, Router

    a = MemberInfo("a", "a:1", ACTIVE, 1.0, "a:1")
    b = MemberInfo("b", "b:1", ACTIVE, 1.0, "b:1")
    left = MemberInfo("b", "b:1", LEFT, 1.0, "b:1")
    router = Router(["a:1"])
    router.update(MembershipSnapshot(1, (a, b)))
    grain = next(GrainId("T", str(i)) for i in range(100)
                 if PlacementRing(MembershipSnapshot(1, (a, b))).owner(GrainId("T", str(i)))
                 == a)
    router.learn(grain, "b:1")  # the grain was last seen on b
    router.update(MembershipSnapshot(2, (a, left)))
    assert router.route(grain) == "a:1"  # b left: no cached route to it, no ring share
    assert PlacementRing(router.snapshot).shares() == {"a": 1.0}
