"""Redis-specific storage behaviour (key layout, metrics, membership scripts) against the real
store, and the state rules and store-restart behaviour through a real silo. The storage and
directory semantics shared with the in-memory twins are in test_persistence_conformance.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from grainery.client import GrainClient
from grainery.client.errors import (
    GrainApplicationError,
    StaleStateError,
    StorageUnavailableError,
)
from grainery.client.routing import ACTIVE, DEAD, FENCED, LEAVING, LEFT, GrainId
from grainery.silo.cluster.directory import RedisGrainDirectory
from grainery.silo.cluster.membership import MembershipService, MembershipTiming
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage.keys import KeySpace
from grainery.silo.storage.pool import NotSentError, StorePool
from grainery.silo.storage.redis_state import Fence, RedisGrainStorage
from grainery.silo.storage.state_codec import encode_state
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.fault_proxy import FaultProxy

GRAINS = ["tests.grains.probes"]


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
    return registration.fence


def sample(metrics: SiloMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# ----- Redis specifics --------------------------------------------------------------------
async def test_storage_metrics_count_outcomes(stack: Stack) -> None:
    g = grain()
    fence = await claim(stack, g)
    etag = await stack.storage.write(g, encode_state({"n": 1}), "", fence)
    await stack.storage.write(g, encode_state({"n": 2}), etag, fence)
    with pytest.raises(StaleStateError):
        await stack.storage.write(g, encode_state({"n": 3}), etag, fence)
    assert sample(stack.metrics, "grainery_storage_operations_total",
                  operation="write", outcome="ok") == 2
    assert sample(stack.metrics, "grainery_storage_operations_total",
                  operation="write", outcome="stale") == 1


async def test_non_object_state_is_wrapped(stack: Stack) -> None:
    g = grain()
    await stack.redis.hset(stack.keys.state(g), mapping={"data": "[1, 2]", "etag": "4"})
    stored = await stack.storage.read(g)
    assert stored.data == {"value": [1, 2]} and stored.etag == "4"


async def test_batched_registrations_index_every_grain(stack: Stack) -> None:
    grains = [grain() for _ in range(300)]  # more than one pipeline batch
    results = await asyncio.gather(*(
        stack.directory.register(g, "A:1", "A", "a:1") for g in grains
    ))
    assert all(r.won for r in results)
    assert await stack.redis.scard(stack.keys.registered_by("A:1")) == len(grains)
    for g, r in zip(grains, results, strict=True):
        assert await stack.directory.unregister(g, r.fence)
    assert await stack.redis.exists(stack.keys.registered_by("A:1")) == 0


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
    async def reached() -> bool:
        snapshot = await watcher.refresh()
        if any(m.silo_id == silo_id and m.state == state for m in snapshot.members):
            return True
        raise AssertionError(f"saw {[(m.silo_id, m.state) for m in snapshot.members]}")

    await eventually(reached, timeout, f"{silo_id} becoming {state} in {watcher.silo_id}'s view")


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


# ----- state rules through a real silo (README "State rules") -------------------------------
@dataclass
class ProxiedSilo:
    silo: SiloProcess
    proxy: FaultProxy
    keys: KeySpace


@pytest.fixture(scope="module")
def proxied(store: TestStore) -> Iterator[ProxiedSilo]:
    """One silo whose store connection goes through a fault proxy."""
    proxy = FaultProxy(store.port).start()
    cluster = f"rules-{uuid.uuid4().hex[:8]}"
    silo = SiloProcess("rules", GRAINS, proxy.url, cluster)
    try:
        silo.start()
        yield ProxiedSilo(silo, proxy, KeySpace(cluster))
    finally:
        silo.stop()
        proxy.stop()


@pytest.fixture
async def rules(proxied: ProxiedSilo) -> AsyncIterator[GrainClient]:
    assert proxied.silo.alive, proxied.silo.log_tail()
    async with GrainClient([proxied.silo.address]) as client:
        yield client


async def stored_state(store: TestStore, keys: KeySpace, grain_type: str, key: str) -> object:
    async with aioredis.Redis.from_url(store.url) as redis:
        raw = await redis.hget(keys.state(GrainId(grain_type, key)), "data")
    return json.loads(raw) if raw else None


async def test_a_turn_that_raises_leaves_the_state_as_persisted(rules: GrainClient) -> None:
    grain = rules.get_grain("StateRules", uuid.uuid4().hex[:8])
    assert await grain.add(1) == 1
    with pytest.raises(GrainApplicationError, match="changed state, then failed"):
        await grain.add_then_raise(5)
    assert await grain.get() == 1, "the failed turn's change stayed visible"
    assert await grain.add(1) == 2


async def test_a_failed_write_restores_the_state_and_is_not_persisted_later(
    rules: GrainClient, proxied: ProxiedSilo, store: TestStore,
) -> None:
    key = uuid.uuid4().hex[:8]
    grain = rules.get_grain("StateRules", key)
    assert await grain.add(1) == 1
    proxied.proxy.fail_next(b'{"value":6}', deliver=False)  # this write never reaches the store
    with pytest.raises(StorageUnavailableError):
        await grain.add(5)
    assert proxied.proxy.faults_fired == 1
    assert await grain.get() == 1
    assert await grain.add(1) == 2
    assert await stored_state(store, proxied.keys, "StateRules", key) == {"value": 2}
    # Caught by the grain and the turn returns normally: restored all the same.
    proxied.proxy.fail_next(b'{"value":12}', deliver=False)
    assert await grain.add_swallowing_failure(10) == "StorageUnavailableError"
    assert await grain.add(1) == 3
    assert await stored_state(store, proxied.keys, "StateRules", key) == {"value": 3}


async def test_an_uncertain_write_that_landed_is_reloaded_before_the_next_turn(
    rules: GrainClient, proxied: ProxiedSilo, store: TestStore,
) -> None:
    key = uuid.uuid4().hex[:8]
    grain = rules.get_grain("StateRules", key)
    assert await grain.add(1) == 1
    proxied.proxy.fail_next(b'{"value":6}', deliver=True)  # it runs; the reply is lost
    with pytest.raises(StorageUnavailableError, match="may or may not"):
        await grain.add(5)
    assert await stored_state(store, proxied.keys, "StateRules", key) == {"value": 6}
    assert await grain.get() == 6, "reads missed the value the uncertain write stored"
    assert await grain.add(1) == 7, "the next write did not name the stored version"


async def test_state_json_cannot_round_trip_is_refused_and_nothing_is_stored(
    rules: GrainClient, proxied: ProxiedSilo, store: TestStore,
) -> None:
    key = uuid.uuid4().hex[:8]
    grain = rules.get_grain("StateRules", key)
    assert await grain.add(1) == 1
    with pytest.raises(GrainApplicationError) as refused:
        await grain.stamp()
    assert refused.value.error_type == "StateEncodingError"
    assert "state['when']" in refused.value.message and "datetime" in refused.value.message
    assert await stored_state(store, proxied.keys, "StateRules", key) == {"value": 1}
    assert await grain.keys() == ["value"]
    assert await grain.add(1) == 2


async def test_clear_state_deletes_the_state_key(
    rules: GrainClient, proxied: ProxiedSilo, store: TestStore,
) -> None:
    key = uuid.uuid4().hex[:8]
    grain = rules.get_grain("StateRules", key)
    assert await grain.add(3) == 3
    await grain.clear()
    async with aioredis.Redis.from_url(store.url) as redis:
        assert await redis.exists(proxied.keys.state(GrainId("StateRules", key))) == 0
    assert await grain.get() == 0
    assert await grain.add(2) == 2


# ----- Redis growth: activations leave nothing behind ----------------------------------------
async def cluster_key_count(redis: aioredis.Redis, cluster: str) -> int:
    found = set()
    for pattern in (f"grainery:{cluster}:*", f"grainery:{{{cluster}}}:*"):
        found |= {k async for k in redis.scan_iter(match=pattern, count=1000)}
    return len(found)


@pytest.mark.slow
async def test_many_activations_leave_the_key_count_at_its_baseline(store: TestStore) -> None:
    cluster = TestCluster(store, GRAINS, size=1)
    total, concurrency = 50_000, 200
    async with aioredis.Redis.from_url(store.url) as redis:
        try:
            cluster.start()
            async with cluster.client() as client:
                await client.get_grain("Ephemeral", "warm-up").touch()
                baseline = await eventually(
                    lambda: _settled(redis, cluster.cluster), 20, "warm-up deactivated")
                queue = iter(range(total))

                async def worker() -> None:
                    for i in queue:
                        await client.get_grain("Ephemeral", f"e{i}").touch(timeout=30)

                await asyncio.gather(*(worker() for _ in range(concurrency)))
                after = await eventually(
                    lambda: _settled(redis, cluster.cluster, baseline), 60,
                    f"key count back to its baseline {baseline}")
                assert after == baseline
        finally:
            cluster.stop()


async def _settled(redis: aioredis.Redis, cluster: str, target: int | None = None) -> int | None:
    count = await cluster_key_count(redis, cluster)
    dirs = [k async for k in redis.scan_iter(match=f"grainery:{cluster}:*:dir", count=1000)]
    if dirs or (target is not None and count != target):
        return None
    return count


async def test_a_killed_silos_directory_entries_are_swept(store: TestStore) -> None:
    cluster = TestCluster(store, GRAINS, size=2)
    async with aioredis.Redis.from_url(store.url) as redis:
        try:
            cluster.start()
            await cluster.wait_for_stable_membership(2)
            victim = cluster.silos[0]
            keys = KeySpace(cluster.cluster)
            async with cluster.client() as client:
                hosts = await asyncio.gather(*(
                    client.get_grain("Recorder", f"k{i}").ping() for i in range(40)))
            on_victim = [f"k{i}" for i, host in enumerate(hosts) if host == victim.name]
            assert on_victim, hosts
            dir_keys = [keys.directory(GrainId("Recorder", k)) for k in on_victim]
            assert await redis.exists(*dir_keys) == len(on_victim)
            victim.kill()

            async def swept() -> bool:
                return await redis.exists(*dir_keys) == 0

            await eventually(swept, 40, "the killed silo's directory entries swept")
            registrants = {m.decode() for m in await redis.smembers(keys.indexed_incarnations)}
            assert all(not r.startswith(f"{victim.name}:") for r in registrants), registrants
        finally:
            cluster.stop()


# ----- store restart: the connection pool (issue 9, item 15) --------------------------------
async def test_a_write_whose_reply_was_lost_is_not_retried(store: TestStore) -> None:
    proxy = FaultProxy(store.port).start()
    redis = aioredis.Redis(connection_pool=StorePool.from_url(proxy.url, max_connections=4))
    key = f"lost-reply-{uuid.uuid4().hex[:8]}"
    try:
        incr = redis.register_script("return redis.call('INCR', KEYS[1])")
        assert await incr(keys=[key]) == 1
        proxy.fail_next(key.encode(), deliver=True)  # runs on the store, the reply is lost
        with pytest.raises(RedisConnectionError) as lost:
            await incr(keys=[key])
        assert not isinstance(lost.value, NotSentError)
        assert int(await redis.get(key)) == 2, "the write was sent twice"
    finally:
        await redis.aclose()
        proxy.stop()


async def test_a_pooled_connection_the_store_closed_is_replaced_before_sending() -> None:
    store = TestStore().start()
    redis = aioredis.Redis(connection_pool=StorePool.from_url(store.url, max_connections=8))
    try:
        await asyncio.gather(*(redis.incr("n") for _ in range(8)))  # 8 pooled connections
        await asyncio.to_thread(store.restart)
        # No AOF: the restarted store is empty, so eight increments read back 1..8.
        assert sorted(await asyncio.gather(*(redis.incr("n") for _ in range(8)))) == list(
            range(1, 9))
    finally:
        await redis.aclose()
        store.stop()


async def test_writes_after_a_store_restart_do_not_fail_on_dead_connections() -> None:
    store = TestStore(appendonly=True).start()
    cluster = TestCluster(store, GRAINS, size=1)
    keys = [f"restart-{i}" for i in range(60)]
    acked = dict.fromkeys(keys, 0)
    try:
        cluster.start()
        async with cluster.client() as client:

            async def burst() -> list[BaseException]:
                async def one(key: str) -> None:
                    await client.get_grain("Recorder", key).add(1, timeout=10)
                    acked[key] += 1

                results = await asyncio.gather(*(one(k) for k in keys), return_exceptions=True)
                return [r for r in results if isinstance(r, BaseException)]

            assert await burst() == []
            await asyncio.to_thread(store.restart)

            async def answers() -> bool:
                async with aioredis.Redis.from_url(store.url) as redis:
                    return bool(await redis.ping())

            await eventually(answers, 20, "the restarted store answering")
            await cluster.wait_for_stable_membership(1)
            failures = await burst()
            assert failures == [], sorted({f"{type(f).__name__}: {f}" for f in failures})
        async with aioredis.Redis.from_url(store.url) as redis:
            space = KeySpace(cluster.cluster)
            for key in keys:
                raw = await redis.hget(space.state(GrainId("Recorder", key)), "data")
                assert raw is not None and json.loads(raw) == {"value": acked[key]}, key
    finally:
        cluster.stop()
        store.stop()
