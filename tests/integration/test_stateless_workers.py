"""Stateless workers with real silos and a real store (issue 10, item 5).

200 concurrent calls through 3 silos are spread over all of them and never run more than
``max_local`` at once on one silo (the worker counts in the store); the state API raises a
clear error; idle workers are collected; no directory key (and no state key) is ever written
for a worker; a grain's call to a worker runs on the grain's silo; status shows them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from grainery.client import GrainApplicationError, GrainClient
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.routing import GrainId
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.grains.pipeline_workers import MAX_LOCAL, run_key
from tests.integration.helpers import running_cluster, unique

GRAINS = ["tests.grains.pipeline_workers"]
WORKER_TYPES = ("ToolRunner", "QuickTool")


@pytest.fixture(scope="module")
def three_silos(store: TestStore) -> Iterator[TestCluster]:
    cluster = TestCluster(store, GRAINS, size=3, env={"GRAINERY_TEST_STORE_URL": store.url})
    with running_cluster(cluster):
        yield cluster


@pytest.fixture
async def client(three_silos: TestCluster) -> AsyncIterator[GrainClient]:
    await three_silos.wait_for_stable_membership(3)
    async with three_silos.client() as connected:
        await connected.wait_for_members(3)
        yield connected


@pytest.fixture
def db(store: TestStore) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(store.url, decode_responses=True)
    yield connection
    connection.close()


def worker_keys(db: redis.Redis, cluster: TestCluster) -> list[str]:
    """Every per-grain key (directory entry, state) of a worker type in the cluster's keyspace,
    and every directory index entry naming one."""
    found = [
        key for worker in WORKER_TYPES
        for key in db.scan_iter(match=f"grainery:{cluster.cluster}:{{{worker}/*")
    ]
    for index in db.scan_iter(match=f"grainery:{{{cluster.cluster}}}:registered:*"):
        found += [f"{index} {m}" for m in db.smembers(index) if any(w in m for w in WORKER_TYPES)]
    return found


async def test_concurrent_calls_are_spread_over_every_silo_and_bounded_per_silo(
    client: GrainClient, three_silos: TestCluster, db: redis.Redis,
) -> None:
    run, key = unique("run"), unique("tool")
    tool = client.get_grain("ToolRunner", key)
    await tool.where()  # the first response tells the client the type is a stateless worker
    assert client.router.is_stateless("ToolRunner")
    served = Counter(await asyncio.gather(*(tool.run(run, 0.05, timeout=30) for _ in range(200))))
    names = sorted(silo.name for silo in three_silos.silos)
    assert sorted(served) == names and all(served[name] > 0 for name in names), served
    for name in names:
        seen = [int(n) for n in db.lrange(run_key(run, name, "seen"), 0, -1)]
        assert int(db.get(run_key(run, name, "served")) or 0) == served[name]
        assert max(seen) == MAX_LOCAL, f"{name} ran up to {max(seen)} calls at once"
    assert worker_keys(db, three_silos) == []


async def test_the_state_api_raises_a_clear_error(client: GrainClient) -> None:
    tool = client.get_grain("ToolRunner", unique("stateful"))
    for method in ("use_state", "save"):
        with pytest.raises(GrainApplicationError) as refused:
            await tool.call(method)
        assert refused.value.error_type == "StatelessWorkerStateError"
        assert "stateless workers have no stored state" in refused.value.message


async def test_idle_workers_are_collected(
    client: GrainClient, three_silos: TestCluster, db: redis.Redis,
) -> None:
    key = unique("quick")
    silos = {silo.name: silo for silo in three_silos.silos}
    gauge = 'grainery_activations{grain_type="QuickTool"}'
    idle = 'grainery_deactivations_total{grain_type="QuickTool",reason="idle"}'
    before = {name: silo.scrape().get(idle, 0.0) for name, silo in silos.items()}
    where = await client.get_grain("QuickTool", key).where()
    silo = silos[where]

    async def collected() -> bool:
        samples = silo.scrape()
        return samples.get(gauge, 0.0) == 0.0 and samples.get(idle, 0.0) > before[where]

    await eventually(collected, 10, f"QuickTool/{key} collected on {where}")
    assert worker_keys(db, three_silos) == []


async def test_a_grains_call_to_a_worker_runs_on_the_grains_silo(
    client: GrainClient, three_silos: TestCluster, db: redis.Redis,
) -> None:
    ring = client.router.ring
    for _ in range(1000):
        planner, tool = unique("planner"), unique("tool")
        planner_owner = ring.owner(GrainId("Planner", planner))
        tool_owner = ring.owner(GrainId("ToolRunner", tool))
        if planner_owner is not None and tool_owner is not None and planner_owner != tool_owner:
            break
    else:
        raise AssertionError("no planner/tool keys with different ring owners")
    seen = await client.get_grain("Planner", planner).use_tool(tool)
    assert seen == {"planner": planner_owner.silo_id, "worker": planner_owner.silo_id}
    assert worker_keys(db, three_silos) == []
    # The scan above would see a directory entry: the planner's is there.
    assert db.exists(f"grainery:{three_silos.cluster}:{{Planner/{planner}}}:dir")


async def test_status_counts_worker_activations(
    client: GrainClient, three_silos: TestCluster,
) -> None:
    tool = client.get_grain("ToolRunner", unique("status"))
    where = await tool.where()
    [silo] = [s for s in three_silos.silos if s.name == where]
    pool = ChannelPool(ClientSecurity(), 4 * 1024 * 1024)
    try:
        stats = await pool.get(silo.address).management.SiloStats(
            pb.SiloStatsRequest(), timeout=5.0
        )
    finally:
        await pool.close()
    counts = {count.grain_type: count.activations for count in stats.activations}
    assert counts.get("ToolRunner", 0) >= 1


def test_a_draining_silo_deactivates_its_workers(store: TestStore, db: redis.Redis) -> None:
    key = unique("drain")
    cluster = TestCluster(store, GRAINS, size=1, env={"GRAINERY_TEST_STORE_URL": store.url})
    with running_cluster(cluster):
        with cluster.sync_client() as client:
            tool = client.get_grain("ToolRunner", key)
            assert {tool.where() for _ in range(3)} == {"silo1"}
        assert db.lrange(f"workers-test:deactivated:{key}", 0, -1) == []
    assert db.lrange(f"workers-test:deactivated:{key}", 0, -1) == ["silo1 shutdown"]
    assert worker_keys(db, cluster) == []
