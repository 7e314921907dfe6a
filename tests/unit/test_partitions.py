"""Partition ownership on the ring (silo/cluster/partitions.py): every partition has exactly
one owner among the active silos, a join moves about its share to the newcomer, and a silo
that is fenced or leaving owns nothing."""

from __future__ import annotations

import pytest

from grainery.silo.cluster.memory import InMemoryCluster, InMemoryMembership
from grainery.silo.cluster.partitions import PartitionOwnership, partition_of

COUNT = 256


def silos(cluster: InMemoryCluster, *names: str) -> list[InMemoryMembership]:
    members = []
    for name in names:
        member = cluster.join(name)
        member.rejoin()
        members.append(member)
    for member in members:
        member.adopt()
    return members


def owners(members: list[InMemoryMembership]) -> list[PartitionOwnership]:
    owned = [PartitionOwnership("test", COUNT, member) for member in members]
    for ownership in owned:
        ownership.update()
    return owned


def test_partition_of_is_stable_and_in_range() -> None:
    assert partition_of("Order/42", COUNT) == partition_of("Order/42", COUNT)
    spread = {partition_of(f"Order/{n}", COUNT) for n in range(5000)}
    assert len(spread) == COUNT  # every partition is used


def test_every_partition_has_exactly_one_owner() -> None:
    cluster = InMemoryCluster()
    owned = owners(silos(cluster, "a", "b", "c"))
    union: set[int] = set()
    for ownership in owned:
        assert not union & ownership.owned
        union |= ownership.owned
    assert union == set(range(COUNT))


def test_a_join_moves_about_its_share_and_tells_the_listeners() -> None:
    cluster = InMemoryCluster()
    members = silos(cluster, "a", "b", "c")
    owned = owners(members)
    lost: dict[str, frozenset[int]] = {}
    for member, ownership in zip(members, owned, strict=True):
        ownership.on_change(lambda gained, gone, name=member.silo_id: lost.update({name: gone}))
    newcomer = silos(cluster, "d")[0]
    for member, ownership in zip(members, owned, strict=True):
        member.adopt()
        ownership.update()
    (fourth,) = owners([newcomer])
    moved = set().union(*lost.values())
    assert moved == set(fourth.owned)
    assert COUNT * 0.1 < len(moved) < COUNT * 0.45  # about a quarter, by the ring's hashing


@pytest.mark.parametrize("change", ["fence", "set_leaving"])
def test_a_silo_that_stops_serving_owns_nothing(change: str) -> None:
    cluster = InMemoryCluster()
    members = silos(cluster, "a", "b")
    owned = owners(members)
    had = owned[0].owned
    assert had
    getattr(members[0], change)()
    gained, lost = owned[0].update()
    assert (gained, lost) == (frozenset(), had)
    assert owned[0].owned == frozenset()
    members[1].adopt()
    if change == "fence":  # the survivor takes everything over
        owned[1].update()
        assert owned[1].owned == frozenset(range(COUNT))
