"""Fencing, health and drain with real silo processes (issue 9, items 2, 9, 10 and 13).

A silo is cut off from its store through a fault proxy; grain code waits on
gates the test opens (Redis keys, see ``tests.grains.probes``), so every fence
happens at a chosen point of an activation or a queue of calls.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.grain_client import snapshot_from_proto
from grainery.client.routing import GrainId, PlacementRing
from grainery.silo.storage.keys import KeySpace
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.cluster_helpers import Events, PinnedStub
from tests.integration.fault_proxy import FaultProxy

GRAINS = ["tests.grains.probes"]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


# ----- helpers ----------------------------------------------------------------------
async def silo_stats(address: str) -> pb.SiloStatsResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        reply: pb.SiloStatsResponse = await pb_grpc.ManagementStub(channel).SiloStats(
            pb.SiloStatsRequest(), timeout=2
        )
    return reply


async def activations_of(address: str, grain_type: str) -> int:
    stats = await silo_stats(address)
    return sum(int(t.activations) for t in stats.activations if t.grain_type == grain_type)


async def owned_keys(cluster: TestCluster, via: str, grain_type: str, silo_id: str,
                     prefix: str, count: int = 1) -> list[str]:
    """Keys whose ring owner is ``silo_id`` (computed, so nothing is activated)."""
    ring = PlacementRing(snapshot_from_proto(await cluster.members(via)))
    run = uuid.uuid4().hex[:8]
    keys = [k for k in (f"{prefix}-{run}-{i}" for i in range(2000))
            if (owner := ring.owner(GrainId(grain_type, k))) and owner.silo_id == silo_id]
    assert len(keys) >= count, f"only {len(keys)} keys of 2000 land on {silo_id}"
    return keys[:count]


def cli(*args: str) -> tuple[int, str]:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "grainery", *args], capture_output=True, text=True, timeout=30,
        check=False,
    )
    return done.returncode, done.stdout.strip()


async def health(address: str) -> tuple[int, str]:
    return await asyncio.to_thread(cli, "health", "--target", address, "--timeout", "3")


async def status_state(via: str, silo_id: str) -> str:
    code, out = await asyncio.to_thread(cli, "status", "--target", via, "--json")
    assert code == 0, out
    rows = [m for m in json.loads(out)["members"] if m["silo_id"] == silo_id]
    return ",".join(row["state"] for row in rows)


async def member_rows(store: TestStore, cluster: str, silo_id: str) -> dict[str, str]:
    """{incarnation: state} of a silo's rows, straight from the store."""
    redis = aioredis.from_url(store.url)
    try:
        raw = await redis.hgetall(KeySpace(cluster).members)
    finally:
        await redis.aclose()
    records = [json.loads(value) for value in raw.values()]
    return {r["incarnation"]: r["state"] for r in records if r["silo_id"] == silo_id}


async def open_gate(store: TestStore, name: str) -> None:
    redis = aioredis.from_url(store.url)
    try:
        await redis.set(f"gate:{name}", 1)
    finally:
        await redis.aclose()


def code_of(outcome: BaseException | Any) -> Any:
    return outcome.code() if isinstance(outcome, grpc.aio.AioRpcError) else outcome


# ----- fixtures ---------------------------------------------------------------------
class Isolated:
    """Two silos on the store, and one more ('isolated') reaching it through a fault proxy."""

    def __init__(self, cluster: TestCluster, silo: SiloProcess, proxy: FaultProxy) -> None:
        self.cluster, self.silo, self.proxy = cluster, silo, proxy
        self.survivor = cluster.silos[0]
        self.pinned = PinnedStub(silo.address)


@pytest.fixture
async def isolated(store: TestStore) -> AsyncIterator[Isolated]:
    proxy = FaultProxy(store.port).start()
    env = {"GRAINERY_TEST_REDIS": store.url}
    cluster = TestCluster(store, GRAINS, size=2, env=env)
    try:
        cluster.start()
        silo = SiloProcess("isolated", GRAINS, proxy.url, cluster.cluster, env=env,
                           log_dir=cluster.log_dir)
        cluster.silos.append(silo)
        silo.start()
        await cluster.wait_for_stable_membership(3)
        setup = Isolated(cluster, silo, proxy)
        yield setup
        await setup.pinned.close()
    finally:
        proxy.unblock()
        cluster.stop()
        proxy.stop()


@pytest.fixture
def single(store: TestStore) -> Iterator[TestCluster]:
    with TestCluster(store, GRAINS, size=1, env={"GRAINERY_TEST_REDIS": store.url}) as cluster:
        yield cluster


# ----- item 2: a fenced silo says so and refuses at once -----------------------------
async def test_fenced_silo_is_not_serving_shows_fenced_and_refuses_at_once(
    isolated: Isolated,
) -> None:
    silo = isolated.silo
    [key] = await owned_keys(isolated.cluster, silo.address, "Gated", silo.name, "health")
    assert (await isolated.pinned.invoke("Gated", key, "ping")).silo_id == silo.name
    assert await health(silo.address) == (0, "SERVING")

    isolated.proxy.block()
    await eventually(lambda: _is(health(silo.address), (1, "NOT_SERVING")), 20,
                     "`grainery health` of the cut-off silo printing NOT_SERVING, exit 1")
    await eventually(lambda: _is(status_state(isolated.survivor.address, silo.name), "fenced"),
                     10, "`grainery status` showing the cut-off silo as fenced")
    # Straight to the fenced silo: refused as UNAVAILABLE (retry-safe) at once, well before
    # the call's own deadline would turn it into DEADLINE_EXCEEDED.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await isolated.pinned.invoke("Gated", key, "ping", timeout=8)
    assert refused.value.code() == UNAVAILABLE, refused.value
    metadata = {k: v for k, v in (refused.value.trailing_metadata() or ())}
    assert metadata.get("grainery-error") == "unavailable"
    assert metadata.get("grainery-retry-safe") == "1"

    isolated.proxy.unblock()
    await eventually(lambda: _is(health(silo.address), (0, "SERVING")), 20,
                     "the silo SERVING again after its store came back")
    await eventually(lambda: _is(status_state(isolated.survivor.address, silo.name), "active"),
                     10, "`grainery status` showing the rejoined silo as active")


async def _is(check: Any, expected: Any) -> bool:
    return bool(await check == expected)


# ----- item 9: fencing during on_activate and during a queue of calls ----------------
async def test_silo_fenced_during_on_activate_keeps_no_live_copy(
    isolated: Isolated, store: TestStore
) -> None:
    silo, events = isolated.silo, Events(store)
    [key] = await owned_keys(isolated.cluster, silo.address, "Gated", silo.name, "gate-activate")
    try:
        activating = asyncio.create_task(
            isolated.pinned.invoke("Gated", key, "ping", timeout=60))
        await eventually(lambda: events.activations("Gated", key), 10, "on_activate starting")
        isolated.proxy.block()
        await eventually(lambda: _is(_state(silo.address), "fenced"), 20, "the silo fencing")
        await open_gate(store, f"activate:{key}")  # on_activate returns on a fenced silo
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await activating
        assert refused.value.code() == UNAVAILABLE, refused.value
        assert await activations_of(silo.address, "Gated") == 0, "a fenced silo kept a copy"

        isolated.proxy.unblock()
        await eventually(lambda: _is(_state(silo.address), "active"), 20, "the silo rejoining")
        assert await activations_of(silo.address, "Gated") == 0, "a copy survived the rejoin"
        # The grain is served again, by a new activation.
        survivor = PinnedStub(isolated.survivor.address)
        try:
            await eventually(lambda: survivor.invoke("Gated", key, "ping", timeout=5), 20,
                             f"Gated/{key} answering after the rejoin")
        finally:
            await survivor.close()
        # Every later activation is a newer epoch (it may move again when rebalancing).
        activations = await events.activations("Gated", key)
        epochs = [epoch for _, epoch in activations]
        assert len(epochs) >= 2 and epochs == sorted(set(epochs)), activations
    finally:
        await events.close()


async def _state(address: str) -> str:
    return (await silo_stats(address)).state


async def test_queued_calls_do_not_start_once_the_lease_lapsed(
    isolated: Isolated, store: TestStore
) -> None:
    """The running turn blocks the silo's loop while its store is cut off, so the loop never
    hears of the fence before the queue moves on: the turn-start check alone must stop it."""
    silo, pinned = isolated.silo, isolated.pinned
    [key] = await owned_keys(isolated.cluster, silo.address, "Gated", silo.name, "queue")
    gate = f"queue-{uuid.uuid4().hex[:8]}"
    await pinned.invoke("Gated", key, "ping")
    holding = asyncio.create_task(pinned.invoke("Gated", key, "hold", gate, timeout=60))
    await eventually(lambda: _is(_in_flight(silo.address), 1), 10, "hold running")
    queued = [asyncio.create_task(pinned.invoke("Gated", key, "mark", i, timeout=60))
              for i in range(3)]
    await eventually(lambda: _is(_in_flight(silo.address), 4), 10, "three calls queued")
    await open_gate(store, f"go:{gate}")  # hold now blocks the loop synchronously
    isolated.proxy.block()
    await eventually(lambda: _no_live_row(store, isolated.cluster.cluster, silo.name), 20,
                     "the cluster declaring the cut-off silo dead")
    await open_gate(store, f"release:{gate}")
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert [code_of(o) for o in outcomes] == [UNAVAILABLE] * 3, outcomes
    events = Events(store)
    try:
        ran = await events.redis.lrange(f"events:ran:Gated:{key}", 0, -1)
    finally:
        await events.close()
    assert ran == [], f"queued calls ran on a fenced silo: {ran}"
    await asyncio.gather(holding, return_exceptions=True)


async def _in_flight(address: str) -> int:
    return int((await silo_stats(address)).calls_in_flight)


async def _no_live_row(store: TestStore, cluster: str, silo_id: str) -> bool:
    rows = await member_rows(store, cluster, silo_id)
    return not any(state in ("active", "leaving") for state in rows.values())


# ----- item 10: blocking grain code does not fence the silo --------------------------
async def test_a_grain_blocking_the_loop_does_not_fence_its_silo(
    single: TestCluster, store: TestStore
) -> None:
    silo = single.silos[0]
    pinned = PinnedStub(silo.address)
    key = f"b-{uuid.uuid4().hex[:8]}"
    try:
        assert (await pinned.invoke("Blocker", key, "add", 1)).result_json == "1"
        before = await member_rows(store, single.cluster, silo.name)
        assert list(before.values()) == ["active"], before
        # 6 s of synchronous sleep: longer than the 4 s lease.
        assert (await pinned.invoke("Blocker", key, "block", 6.0, timeout=30)).result_json
        assert (await pinned.invoke("Blocker", key, "add", 1)).result_json == "2"
        assert await member_rows(store, single.cluster, silo.name) == before, "not the same lease"
        log = silo.log_path.read_text(errors="replace")
        assert "fencing" not in log, silo.log_tail()
        assert "blocked for" in log and f"Blocker/{key}.block" in log, silo.log_tail()
    finally:
        await pinned.close()


async def test_run_blocking_runs_sync_work_without_blocking_other_grains(
    single: TestCluster, store: TestStore
) -> None:
    silo = single.silos[0]
    pinned = PinnedStub(silo.address)
    gate = f"rb-{uuid.uuid4().hex[:8]}"
    try:
        working = asyncio.create_task(
            pinned.invoke("Blocker", f"{gate}-worker", "in_thread", gate, timeout=60))
        await eventually(lambda: _is(_in_flight(silo.address), 1), 10, "in_thread running")
        for i in range(5):  # other grains answer while the synchronous work goes on
            await pinned.invoke("Blocker", f"{gate}-other-{i}", "ping", timeout=5)
        assert not working.done()
        await open_gate(store, f"release:{gate}")
        assert json.loads((await working).result_json) == f"release:{gate}"
    finally:
        await pinned.close()


# ----- item 13: a drain hands idle grains over at once -------------------------------
async def test_drain_hands_idle_grains_over_while_a_slow_call_runs(store: TestStore) -> None:
    env = {"GRAINERY_TEST_REDIS": store.url}
    with TestCluster(store, GRAINS, size=2, env=env) as cluster:
        await cluster.wait_for_stable_membership(2)
        leaving, staying = cluster.silos
        to_leaving, to_staying = PinnedStub(leaving.address), PinnedStub(staying.address)
        try:
            idle = await owned_keys(cluster, leaving.address, "Recorder", leaving.name, "idle", 20)
            for key in idle:
                assert (await to_leaving.invoke("Recorder", key, "ping")).silo_id == leaving.name
            [slow_key] = await owned_keys(cluster, leaving.address, "Gated", leaving.name, "slow")
            gate = f"drain-{uuid.uuid4().hex[:8]}"
            slow = asyncio.create_task(
                to_leaving.invoke("Gated", slow_key, "wait", gate, timeout=60))
            await eventually(lambda: _is(_in_flight(leaving.address), 1), 10, "slow call running")

            leaving.signal(signal.SIGTERM)

            async def all_moved() -> bool:
                replies = await asyncio.gather(
                    *(to_staying.invoke("Recorder", key, "ping", timeout=3) for key in idle))
                return all(reply.silo_id == staying.name for reply in replies)

            await eventually(all_moved, 10, "the idle grains answering on the other silo")
            assert not slow.done(), "the slow call ended before the idle grains moved"
            await open_gate(store, f"release:{gate}")
            assert json.loads((await slow).result_json) == gate
            assert await asyncio.to_thread(leaving.stop, 20) == 0, leaving.log_tail()
        finally:
            await to_leaving.close()
            await to_staying.close()


async def test_calls_queued_when_a_silo_fences_fail_as_unavailable(
    isolated: Isolated, store: TestStore
) -> None:
    """The loop is free this time: fencing drops the queue, and each queued call is told
    it did not run (retry-safe UNAVAILABLE), not handed an internal error."""
    silo, pinned = isolated.silo, isolated.pinned
    [key] = await owned_keys(isolated.cluster, silo.address, "Gated", silo.name, "dropped")
    gate = f"dropped-{uuid.uuid4().hex[:8]}"
    await pinned.invoke("Gated", key, "ping")
    waiting = asyncio.create_task(pinned.invoke("Gated", key, "wait", gate, timeout=60))
    await eventually(lambda: _is(_in_flight(silo.address), 1), 10, "wait running")
    queued = [asyncio.create_task(pinned.invoke("Gated", key, "mark", i, timeout=60))
              for i in range(3)]
    await eventually(lambda: _is(_in_flight(silo.address), 4), 10, "three calls queued")
    isolated.proxy.block()
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert [code_of(o) for o in outcomes] == [UNAVAILABLE] * 3, outcomes
    assert await _state(silo.address) == "fenced"
    await open_gate(store, f"release:{gate}")
    await asyncio.gather(waiting, return_exceptions=True)
    events = Events(store)
    try:
        assert await events.redis.lrange(f"events:ran:Gated:{key}", 0, -1) == []
    finally:
        await events.close()
