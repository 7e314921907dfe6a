"""Three real silo processes on one real store: placement, races, crashes, pauses, partitions.

Each test tries to break the invariant the cluster exists for: at most one live
activation per grain, and no acknowledged write lost or overwritten by a stale
activation.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from grainery.client import GrainClient, GrainError
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.cluster_helpers import CounterLoad, Events, PinnedStub
from tests.integration.fault_proxy import FaultProxy

GRAINS = ["tests.grains.probes"]
FAILOVER_BOUND = 10.0  # seconds (README: default lease 4 s + detection + retry)


@pytest.fixture
def cluster(store: TestStore) -> Iterator[TestCluster]:
    with TestCluster(store, GRAINS, size=3, env={"GRAINERY_TEST_REDIS": store.url}) as running:
        yield running


async def test_distribution_over_three_silos(cluster: TestCluster) -> None:
    await cluster.wait_for_stable_membership(3)
    async with cluster.client() as client:
        hosts = await asyncio.gather(
            *(client.get_grain("Recorder", f"spread-{i}").ping() for i in range(1000))
        )
    shares = {silo: n / 1000 for silo, n in Counter(hosts).items()}
    assert len(shares) == 3, shares
    assert all(0.20 <= share <= 0.46 for share in shares.values()), shares


async def test_activation_race_through_all_silos(cluster: TestCluster, store: TestStore) -> None:
    """1,000 concurrent first calls, every key sent through all three silos at once."""
    await cluster.wait_for_stable_membership(3)
    stubs = [PinnedStub(address) for address in cluster.addresses]
    events = Events(store)
    keys = [f"race-{i}" for i in range(334)]
    try:
        calls = [stub.invoke("Recorder", key, "ping", timeout=30) for key in keys for stub in stubs]
        replies = await asyncio.gather(*calls)
        assert len(replies) == 1002
        by_key: dict[str, set[str]] = {}
        for (key, _stub), reply in zip(
            [(k, s) for k in keys for s in stubs], replies, strict=True
        ):
            by_key.setdefault(key, set()).add(reply.silo_id)
        split = {k: v for k, v in by_key.items() if len(v) != 1}
        assert not split, f"grains answered from more than one silo: {split}"
        for key in keys:
            activations = await events.activations("Recorder", key)
            assert len(activations) == 1, f"Recorder/{key} activated {activations}"
    finally:
        for stub in stubs:
            await stub.close()
        await events.close()


async def test_kill_9_under_load_loses_no_acknowledged_write(cluster: TestCluster) -> None:
    await cluster.wait_for_stable_membership(3)
    keys = [f"counter-{i}" for i in range(30)]
    async with cluster.client(refresh_interval=0.5) as client:
        load = CounterLoad(client, keys, timeout=15).start()
        await eventually(lambda: asyncio.sleep(0, load.total_acked > 300), 20, "warm-up")
        victim = cluster.silos[1]
        acked_at_kill = dict(load.acked)
        killed_at = time.monotonic()
        victim.kill()
        # Every grain answers again within the failover bound, with every write acknowledged
        # before the kill.
        recovered = await eventually(
            lambda: _all_answer(client, keys, acked_at_kill), FAILOVER_BOUND,
            "every counter answering with its acknowledged writes",
        )
        failover = time.monotonic() - killed_at
        values = await load.stop()
    assert recovered
    for key in keys:
        assert load.acked[key] <= values[key] <= load.attempted[key], (
            key, load.acked[key], values[key])
    print(f"failover: every grain answered {failover:.2f}s after kill -9")


async def _in_flight(stub: PinnedStub) -> int:
    stats = await pb_grpc.ManagementStub(stub.channel).SiloStats(pb.SiloStatsRequest(), timeout=2)
    return int(stats.calls_in_flight)


async def _all_answer(client: GrainClient, keys: list[str], acked: dict[str, int]) -> bool:
    """True when every counter answers and holds at least the writes acknowledged before
    the kill (a lost write, or an answer from an empty activation, keeps this False)."""
    values = await asyncio.gather(
        *(client.get_grain("SlowWriter", k).get(timeout=2) for k in keys),
        return_exceptions=True,
    )
    return all(
        isinstance(value, int) and value >= acked.get(key, 0)
        for key, value in zip(keys, values, strict=True)
    )


async def test_paused_silo_cannot_write_after_takeover(
    cluster: TestCluster, store: TestStore
) -> None:
    await cluster.wait_for_stable_membership(3)
    victim = cluster.silos[0]
    others = [s for s in cluster.silos if s is not victim]
    pinned = PinnedStub(victim.address)
    survivor = PinnedStub(others[0].address)
    events = Events(store)
    try:
        # Find a grain owned by the victim and activate it there.
        key = await _key_owned_by(pinned, victim.name)
        # A slow call starts on the victim; the silo freezes before the call writes.
        slow = asyncio.create_task(pinned.invoke("SlowWriter", key, "slow_add", 100, 1.0,
                                                 timeout=60))
        await eventually(lambda: _in_flight(pinned), 10, "the slow call running on the victim")
        victim.pause()
        # The grain moves: calls through a survivor succeed once the lease lapses.
        reply = await eventually(
            lambda: survivor.invoke("SlowWriter", key, "add", 1, timeout=2),
            FAILOVER_BOUND + 5, f"SlowWriter/{key} answering after its silo froze",
        )
        assert reply.silo_id != victim.name
        await survivor.invoke("SlowWriter", key, "add", 1)
        victim.resume()
        # The frozen activation wakes up and tries to write: it must be refused.
        with pytest.raises(Exception) as refused:
            await slow
        assert "ABORTED" in str(refused.value) or "UNAVAILABLE" in str(refused.value)
        value = (await survivor.invoke("SlowWriter", key, "get")).result_json
        assert value == "2", f"stale write from the paused silo landed: value {value}"
        activations = await events.activations("SlowWriter", key)
        assert len(activations) == 2 and activations[1][1] > activations[0][1], activations
        # The resumed silo does not serve the grain any more: calls through it are forwarded.
        through_victim = await eventually(
            lambda: pinned.invoke("SlowWriter", key, "get", timeout=3),
            FAILOVER_BOUND, "the resumed silo answering again",
        )
        assert through_victim.silo_id != victim.name
    finally:
        await pinned.close()
        await survivor.close()
        await events.close()


async def _key_owned_by(stub: PinnedStub, silo: str) -> str:
    for i in range(200):
        key = f"owned-{i}"
        reply = await stub.invoke("SlowWriter", key, "get")
        if reply.silo_id == silo:
            return key
    raise AssertionError(f"no grain among 200 landed on {silo}")


async def test_silo_cut_off_from_redis_fences_itself(store: TestStore) -> None:
    proxy = FaultProxy(store.port).start()
    events = Events(store)
    env = {"GRAINERY_TEST_REDIS": store.url}
    cluster = TestCluster(store, GRAINS, size=2, env=env)
    try:
        cluster.start()
        isolated = cluster.silos[0].__class__(
            "isolated", GRAINS, proxy.url, cluster.cluster, env=env, log_dir=cluster.log_dir
        )
        cluster.silos.append(isolated)
        isolated.start()
        await cluster.wait_for_stable_membership(3)
        pinned = PinnedStub(isolated.address)
        key = await _key_owned_by(pinned, "isolated")
        await pinned.invoke("SlowWriter", key, "add", 5)
        proxy.block()
        survivor = PinnedStub(cluster.silos[1].address)
        reply = await eventually(
            lambda: survivor.invoke("SlowWriter", key, "add", 1, timeout=2),
            FAILOVER_BOUND + 5, f"SlowWriter/{key} moving off the isolated silo",
        )
        assert reply.silo_id != "isolated" and reply.result_json == "6"
        # The isolated silo refuses to serve rather than run a second activation.
        with pytest.raises(Exception) as refused:
            await pinned.invoke("SlowWriter", key, "get", timeout=3)
        assert "UNAVAILABLE" in str(refused.value) or "DEADLINE" in str(refused.value)
        activations = await events.activations("SlowWriter", key)
        assert activations[0][0] == "isolated" and len(activations) == 2
        proxy.unblock()
        # Healed: it rejoins as a new incarnation and forwards the grain to its owner.
        healed = await eventually(
            lambda: pinned.invoke("SlowWriter", key, "get", timeout=3),
            20, "the isolated silo serving again after the partition healed",
        )
        assert healed.result_json == "6"
        # It may move back to its ring owner (rebalancing), but only ever as a new activation,
        # registered after the last one (activation ids sort in registration order).
        ids = [activation for _, activation in await events.activations("SlowWriter", key)]
        assert ids == sorted(set(ids)), ids
        await pinned.close()
        await survivor.close()
    finally:
        cluster.stop()
        proxy.stop()
        await events.close()


async def test_rolling_restart_under_load_has_no_failed_call(cluster: TestCluster) -> None:
    await cluster.wait_for_stable_membership(3)
    keys = [f"roll-{i}" for i in range(20)]
    failures: list[str] = []
    done = 0
    stop = asyncio.Event()

    async def load(client: GrainClient, key: str) -> None:
        nonlocal done
        while not stop.is_set():
            try:
                await client.get_grain("Recorder", key).add(1, timeout=30)
                done += 1
            except GrainError as error:
                failures.append(f"{key}: {type(error).__name__}: {error}")
            await asyncio.sleep(0.01)

    async with cluster.client(refresh_interval=0.5) as client:
        workers = [asyncio.create_task(load(client, key)) for key in keys]
        for silo in list(cluster.silos):
            assert await asyncio.to_thread(silo.stop) == 0, silo.log_tail()
            await asyncio.to_thread(cluster.restart_silo, silo)
            await cluster.wait_for_stable_membership(3)
        stop.set()
        await asyncio.gather(*workers)
        totals = [await client.get_grain("Recorder", key).get() for key in keys]
    assert not failures, failures[:5]
    assert sum(totals) == done


async def test_joining_silo_takes_over_its_share(cluster: TestCluster) -> None:
    await cluster.wait_for_stable_membership(3)
    keys = [f"join-{i}" for i in range(300)]
    async with cluster.client(refresh_interval=0.5) as client:
        await asyncio.gather(*(client.get_grain("Recorder", k).add(1) for k in keys))
        newcomer = await asyncio.to_thread(cluster.add_silo)
        await cluster.wait_for_stable_membership(4)

        async def newcomer_hosts_its_share() -> bool:
            hosts = await asyncio.gather(*(client.get_grain("Recorder", k).ping() for k in keys))
            share = Counter(hosts)[newcomer.name] / len(keys)
            return share >= 0.15

        await eventually(newcomer_hosts_its_share, 20, "the new silo hosting >= 15% of grains")
        values = await asyncio.gather(*(client.get_grain("Recorder", k).get() for k in keys))
    assert values == [1] * len(keys)


async def test_steady_state_calls_need_no_forward(cluster: TestCluster) -> None:
    """>= 99% of the Python client's calls reach the owner directly (client and silo counts)."""
    await cluster.wait_for_stable_membership(3)
    keys = [f"direct-{i}" for i in range(200)]
    async with cluster.client() as client:
        await asyncio.gather(*(client.get_grain("Recorder", k).ping() for k in keys))  # warm
        before = _forwarded(cluster)
        client.stats.calls = client.stats.forwarded = 0
        for _ in range(5):
            await asyncio.gather(*(client.get_grain("Recorder", k).add(1) for k in keys))
        stats = client.stats
    forwarded_by_silos = _forwarded(cluster) - before
    assert stats.calls == 1000
    assert stats.direct_ratio >= 0.99, stats
    assert forwarded_by_silos <= 10, forwarded_by_silos


def _forwarded(cluster: TestCluster) -> float:
    return sum(
        silo.scrape().get('grainery_gateway_calls_total{route="forwarded"}', 0.0)
        for silo in cluster.live
    )


async def test_redis_restart_loses_no_acknowledged_write() -> None:
    """Restart the store (AOF, fsync always) under load: every acknowledged write survives,
    no write lands twice, and every grain answers again afterwards."""
    store = TestStore(appendonly=True).start()
    cluster = TestCluster(store, GRAINS, size=2)
    keys = [f"redis-restart-{i}" for i in range(20)]
    try:
        cluster.start()
        await cluster.wait_for_stable_membership(2)
        async with cluster.client(refresh_interval=0.5) as client:
            load = CounterLoad(client, keys, timeout=5).start()
            await eventually(lambda: asyncio.sleep(0, load.total_acked > 200), 20, "warm-up")
            await asyncio.to_thread(store.restart)
            before = load.total_acked
            await eventually(lambda: asyncio.sleep(0, load.total_acked > before + 200),
                             FAILOVER_BOUND + 10, "writes succeeding after the store restarted")
            values = await load.stop()
    finally:
        cluster.stop()
        store.stop()
    for key in keys:
        assert load.acked[key] <= values[key] <= load.attempted[key], (
            key, load.acked[key], values[key])
