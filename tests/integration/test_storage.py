"""The Redis Lua scripts (state CAS, directory, membership) run directly against the real store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from grainery.client.errors import ActivationFencedError, StaleStateError
from grainery.client.routing import ACTIVE, DEAD, FENCED, LEAVING, LEFT, GrainId
from grainery.silo.cluster.directory import RedisGrainDirectory
from grainery.silo.cluster.membership import MembershipService, MembershipTiming
from grainery.silo.keys import KeySpace
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage import Fence, RedisGrainStorage
from grainery.silo.testing import TestStore


@dataclass
class Stack:
    redis: aioredis.Redis
    keys: KeySpace
    storage: RedisGrainStorage
    directory: RedisGrainDirectory
    metrics: SiloMetrics


@pytest.fixture
async def stack(store: TestStore) -> AsyncIterator[Stack]:
    redis = aioredis.Redis.from_url(store.url)
    keys = KeySpace(f"storage-{uuid.uuid4().hex[:8]}")
    metrics = SiloMetrics()
    yield Stack(redis, keys, RedisGrainStorage(redis, keys, metrics),
                RedisGrainDirectory(redis, keys, metrics), metrics)
    await redis.aclose()


def grain() -> GrainId:
    return GrainId("Counter", uuid.uuid4().hex[:8])


async def claim(stack: Stack, g: GrainId, incarnation: str = "A:1", dead: str = "") -> Fence:
    registration = await stack.directory.register(g, incarnation, incarnation.split(":")[0],
                                                  "127.0.0.1:1", dead=dead)
    assert registration.won, f"{incarnation} could not register {g}: {registration.entry}"
    return Fence(incarnation, registration.entry.epoch)


def sample(metrics: SiloMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# ----- state: compare-and-set -----------------------------------------------
async def test_missing_state_reads_as_empty(stack: Stack) -> None:
    stored = await stack.storage.read(grain())
    assert stored.data == {} and stored.etag == ""


async def test_compare_and_set_write(stack: Stack) -> None:
    g = grain()
    fence = await claim(stack, g)
    etag1 = await stack.storage.write(g, {"n": 1}, "", fence)
    etag2 = await stack.storage.write(g, {"n": 2, "s": "é"}, etag1, fence)
    assert (etag1, etag2) == ("1", "2")
    stored = await stack.storage.read(g)
    assert stored.data == {"n": 2, "s": "é"} and stored.etag == "2"
    assert sample(stack.metrics, "grainery_storage_operations_total",
                  operation="write", outcome="ok") == 2


async def test_stale_write_is_rejected_without_overwriting(stack: Stack) -> None:
    g = grain()
    fence = await claim(stack, g)
    etag = await stack.storage.write(g, {"n": 1}, "", fence)
    await stack.storage.write(g, {"n": 2}, etag, fence)
    for stale in (etag, "", "999"):
        with pytest.raises(StaleStateError, match="stale"):
            await stack.storage.write(g, {"n": -1}, stale, fence)
    stored = await stack.storage.read(g)
    assert stored.data == {"n": 2} and stored.etag == "2"
    assert sample(stack.metrics, "grainery_storage_operations_total",
                  operation="write", outcome="stale") == 3


async def test_clear_keeps_the_etag_growing(stack: Stack) -> None:
    g = grain()
    fence = await claim(stack, g)
    etag = await stack.storage.write(g, {"n": 1}, "", fence)
    cleared = await stack.storage.clear(g, etag, fence)
    assert int(cleared) > int(etag)
    stored = await stack.storage.read(g)
    assert stored.data == {} and stored.etag == cleared
    # No ABA: a writer that last saw "nothing stored" (etag "") must not win after a clear.
    with pytest.raises(StaleStateError):
        await stack.storage.write(g, {"n": 99}, "", fence)
    with pytest.raises(StaleStateError):
        await stack.storage.clear(g, etag, fence)
    assert int(await stack.storage.write(g, {"n": 3}, cleared, fence)) > int(cleared)
    assert (await stack.storage.read(g)).data == {"n": 3}


async def test_write_of_unserialisable_state_fails_before_touching_redis(stack: Stack) -> None:
    g = grain()
    fence = await claim(stack, g)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await stack.storage.write(g, {"bad": {1, 2}}, "", fence)
    assert await stack.redis.exists(stack.keys.state(g)) == 0


async def test_non_object_state_is_wrapped(stack: Stack) -> None:
    g = grain()
    await stack.redis.hset(stack.keys.state(g), mapping={"data": "[1, 2]", "etag": "4"})
    stored = await stack.storage.read(g)
    assert stored.data == {"value": [1, 2]} and stored.etag == "4"


# ----- fencing --------------------------------------------------------------
async def test_write_from_a_superseded_activation_is_fenced(stack: Stack) -> None:
    g = grain()
    old = await claim(stack, g, "A:1")
    etag = await stack.storage.write(g, {"owner": "A"}, "", old)
    new = await claim(stack, g, "B:1", dead="A:1")  # A's silo was declared dead
    assert int(new.epoch) > int(old.epoch)
    with pytest.raises(ActivationFencedError):
        await stack.storage.write(g, {"owner": "A again"}, etag, old)  # right etag, old owner
    with pytest.raises(ActivationFencedError):
        await stack.storage.clear(g, etag, old)
    assert (await stack.storage.read(g)).data == {"owner": "A"}
    await stack.storage.write(g, {"owner": "B"}, etag, new)
    assert (await stack.storage.read(g)).data == {"owner": "B"}


async def test_reregistration_by_the_same_silo_fences_its_older_activation(stack: Stack) -> None:
    g = grain()
    first = await claim(stack, g, "A:1")
    second = await claim(stack, g, "A:1")  # a leftover of its own: taken back, new epoch
    assert int(second.epoch) > int(first.epoch)
    with pytest.raises(ActivationFencedError):
        await stack.storage.write(g, {"n": 1}, "", first)
    assert await stack.storage.write(g, {"n": 1}, "", second) == "1"


async def test_write_without_any_directory_entry_is_fenced(stack: Stack) -> None:
    g = grain()
    with pytest.raises(ActivationFencedError):
        await stack.storage.write(g, {"n": 1}, "", Fence("A:1", "1"))
    assert await stack.redis.exists(stack.keys.state(g)) == 0


# ----- directory: register / unregister -----------------------------------------
async def test_register_semantics(stack: Stack) -> None:
    g = grain()
    directory = stack.directory
    # Absent: won, first epoch, empty state loaded in the same round trip.
    absent = await directory.register(g, "A:1", "A", "a:1")
    assert absent.won and absent.entry.epoch == "1" and absent.entry.address == "a:1"
    assert absent.state is not None and absent.state.data == {} and absent.state.etag == ""
    # Own leftover: won again with a larger epoch.
    own = await directory.register(g, "A:1", "A", "a:1")
    assert own.won and int(own.entry.epoch) > int(absent.entry.epoch)
    # Alive conflict: lost, and told who holds it; nothing changed.
    conflict = await directory.register(g, "B:1", "B", "b:1")
    assert not conflict.won and conflict.state is None
    assert (conflict.entry.incarnation, conflict.entry.silo_id, conflict.entry.address) == (
        "A:1", "A", "a:1")
    assert conflict.entry.epoch == own.entry.epoch
    # Naming the wrong dead incarnation does not take it over.
    wrong = await directory.register(g, "B:1", "B", "b:1", dead="C:1")
    assert not wrong.won and wrong.entry.incarnation == "A:1"
    # Dead takeover: won with a larger epoch.
    takeover = await directory.register(g, "B:1", "B", "b:1", dead="A:1")
    assert takeover.won and int(takeover.entry.epoch) > int(own.entry.epoch)
    entry = await directory.lookup(g)
    assert entry is not None and (entry.incarnation, entry.address, entry.epoch) == (
        "B:1", "b:1", takeover.entry.epoch)


async def test_register_returns_the_stored_state(stack: Stack) -> None:
    g = grain()
    fence = await claim(stack, g, "A:1")
    etag = await stack.storage.write(g, {"memory": ["hi"]}, "", fence)
    assert await stack.directory.unregister(g, fence.incarnation, fence.epoch)
    again = await stack.directory.register(g, "B:1", "B", "b:1")
    assert again.won and again.state is not None
    assert again.state.data == {"memory": ["hi"]} and again.state.etag == etag


async def test_unregister_only_by_the_same_activation(stack: Stack) -> None:
    g = grain()
    fence = await claim(stack, g, "A:1")
    assert not await stack.directory.unregister(g, "B:1", fence.epoch)  # other silo
    assert not await stack.directory.unregister(g, "A:1", str(int(fence.epoch) + 1))  # other epoch
    assert await stack.directory.lookup(g) is not None
    assert await stack.directory.unregister(g, "A:1", fence.epoch)
    assert await stack.directory.lookup(g) is None
    assert not await stack.directory.unregister(g, "A:1", fence.epoch)  # already gone
    # The epoch survives unregistration: the next activation's epoch is strictly larger.
    later = await claim(stack, g, "B:1")
    assert int(later.epoch) > int(fence.epoch)
    with pytest.raises(ActivationFencedError):
        await stack.storage.write(g, {"n": 1}, "", fence)


async def test_concurrent_registrations_have_one_winner(stack: Stack) -> None:
    g = grain()
    results = await asyncio.gather(*(
        stack.directory.register(g, f"S{i}:1", f"S{i}", f"s{i}:1") for i in range(20)
    ))
    winners = [r for r in results if r.won]
    assert len(winners) == 1, [r.entry for r in winners]
    assert all(r.entry.incarnation == winners[0].entry.incarnation for r in results)


# ----- key layout -------------------------------------------------------------
@pytest.mark.parametrize("key", ["plain", "a/b", "with}brace", "{tagged}", "ü", ""])
def test_one_grains_keys_share_a_slot(key: str) -> None:
    keys = KeySpace("prod")
    g = GrainId("Counter", key)
    assert key_slot(keys.state(g).encode()) == key_slot(keys.directory(g).encode())
    assert keys.state(g) != keys.directory(g)


def test_keys_are_namespaced_by_cluster_and_grain() -> None:
    g = GrainId("Counter", "k")
    a, b = KeySpace("a"), KeySpace("b")
    assert a.state(g) != b.state(g)
    assert a.state(g) != a.state(GrainId("Counter", "k2"))
    assert a.state(g) != a.state(GrainId("Other", "k"))
    assert "{Counter/k}" in a.state(g)
    membership = {key_slot(k.encode()) for k in (a.members, a.members_version, a.members_channel)}
    assert len(membership) == 1


def test_grains_spread_over_slots() -> None:
    keys = KeySpace("prod")
    slots = {key_slot(keys.state(GrainId("Counter", str(i))).encode()) for i in range(200)}
    assert len(slots) > 150  # the tag is per grain, not per cluster


# ----- membership -----------------------------------------------------------------
# The scripts are driven directly (join, renew, read, leave); no heartbeat task runs, so each
# test controls exactly which leases are renewed.
LONG = MembershipTiming(heartbeat_interval=1.0, lease_duration=10.0)
SHORT = MembershipTiming(heartbeat_interval=0.1, lease_duration=0.5)


def service(stack: Stack, silo_id: str, timing: MembershipTiming = LONG) -> MembershipService:
    return MembershipService(stack.redis, stack.keys, silo_id, f"{silo_id}:7070", timing,
                             SiloMetrics())


async def wait_for_state(watcher: MembershipService, silo_id: str, state: str,
                         timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        snapshot = await watcher.refresh()
        seen = [(m.silo_id, m.state) for m in snapshot.members]
        if any(m.silo_id == silo_id and m.state == state for m in snapshot.members):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{silo_id} never became {state} in {watcher.silo_id}'s view; saw {seen}")


async def test_join_see_each_other_and_leave(stack: Stack) -> None:
    a, b = service(stack, "a"), service(stack, "b")
    await a._join()
    await b._join()
    assert a.serving and b.serving
    snapshot = await a.refresh()
    assert {(m.silo_id, m.state) for m in snapshot.members} == {("a", ACTIVE), ("b", ACTIVE)}
    version = snapshot.version
    await b.set_leaving()
    await wait_for_state(a, "b", LEAVING)
    assert b.serving  # a leaving member keeps its lease while it drains
    assert [m.silo_id for m in a.snapshot.active] == ["a"]  # but leaves the placement ring
    await b.stop()
    await wait_for_state(a, "b", LEFT)  # a graceful leave is "left", not "dead"
    assert a.snapshot.version > version
    assert not b.serving
    assert a.is_alive(b.incarnation) is False and a.is_alive(a.incarnation) is True
    await a.stop()


async def test_a_lapsed_lease_is_declared_dead_and_cannot_renew(stack: Stack) -> None:
    a, b = service(stack, "a"), service(stack, "b", SHORT)
    await a._join()
    await b._join()
    assert await b._renew() > 0  # renewing in time works
    await wait_for_state(a, "b", DEAD)  # then b stops renewing: Redis time passes its lease
    assert await b._renew() == -1  # a dead incarnation never comes back
    assert not b.serving and b.state == FENCED
    assert a.is_alive(b.incarnation) is False
    await b._join()  # it may only rejoin as a new incarnation
    await wait_for_state(a, "b", ACTIVE)
    await a.stop()
    await b.stop()


async def test_rejoining_with_the_same_id_retires_the_old_incarnation(stack: Stack) -> None:
    first, second, watcher = service(stack, "x"), service(stack, "x"), service(stack, "w")
    await first._join()
    await watcher._join()
    await second._join()
    assert second.incarnation != first.incarnation
    snapshot = await watcher.refresh()
    states = {m.incarnation: m.state for m in snapshot.members if m.silo_id == "x"}
    assert states == {second.incarnation: ACTIVE}  # the old incarnation's row is gone at once
    assert watcher.is_alive(first.incarnation) is None
    await watcher.refresh()
    assert watcher.is_alive(first.incarnation) is False  # unknown after a fresh read: gone
    assert await first._renew() == -1
    assert await second._renew() > 0
    for member in (first, second, watcher):
        await member.stop()


async def test_membership_versions_only_grow(stack: Stack) -> None:
    a, b = service(stack, "a"), service(stack, "b")
    await a._join()
    v1 = (await a.refresh()).version
    await b._join()
    v2 = (await a.refresh()).version
    await b.set_leaving()
    v3 = (await a.refresh()).version
    await b.stop()
    v4 = (await a.refresh()).version
    assert 0 < v1 < v2 < v3 < v4
    assert await a._renew() == v4  # a renewal without a state change does not bump it
    await a.stop()
