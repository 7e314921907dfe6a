"""Call filters on real silos: ``--filter MODULE:NAME`` (silo-wide, every call that runs
on the silo, grain-to-grain ones too, once), a grain's ``on_incoming_call``, client
outgoing filters, and start-up refusals of bad ``--filter`` values."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from grainery.client.errors import FilterError, PermissionDeniedError
from grainery.client.filters import Call, Proceed
from grainery.client.grain_client import GrainClient
from grainery.client.routing import GrainId
from grainery.client.sync import SyncGrainClient
from grainery.silo.testing import TestCluster, TestStore
from tests.integration.helpers import running_cluster
from tests.integration.test_startup import REPO, clean_env

GRAINS = ["tests.grains.pipeline_k"]
MODULE = "tests.grains.pipeline_k"
RUN = uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def filtered(store: TestStore) -> Iterator[TestCluster]:
    filters = [f"{MODULE}:{name}" for name in ("count_calls", "check_token", "explode",
                                               "set_tenant", "no_op")]
    cluster = TestCluster(
        store, GRAINS, size=2,
        extra_args=[item for spec in filters for item in ("--filter", spec)],
        env={"PIPELINE_K_REDIS": store.url, "PIPELINE_K_RUN": RUN},
    )
    with running_cluster(cluster):
        yield cluster


@pytest.fixture
async def client(filtered: TestCluster) -> AsyncIterator[GrainClient]:
    await filtered.wait_for_stable_membership(2)
    async with filtered.client() as connected:
        await connected.wait_for_members(2)
        yield connected


def counts(store: TestStore) -> dict[str, int]:
    raw = redis.Redis.from_url(store.url).hgetall(f"pipeline-k:{RUN}")
    return {k.decode(): int(v) for k, v in raw.items()}


def key_routed_to(client: GrainClient, address: str, prefix: str) -> str:
    for n in range(10_000):
        key = f"{prefix}-{RUN}-{n}"
        if client.router.route(GrainId("FilteredAgent", key)) == address:
            return key
    raise AssertionError(f"no key routes to {address}")


async def test_token_filter_refuses_and_lets_good_calls_through(client: GrainClient) -> None:
    with pytest.raises(PermissionDeniedError) as refused:
        await client.get_grain("FilteredAgent", "bob").drop()
    assert refused.value.kind == "permission_denied"
    assert "bob may not drop" in refused.value.message
    assert await client.get_grain("FilteredAgent", "admin-1").drop() == "dropped"


async def test_counting_filter_sees_every_call_once_including_grain_to_grain(
    filtered: TestCluster, client: GrainClient, store: TestStore
) -> None:
    one, two = filtered.silos[0].address, filtered.silos[1].address
    a, b = key_routed_to(client, one, "a"), key_routed_to(client, two, "b")
    before = counts(store)
    assert await client.get_grain("FilteredAgent", a).ask(b) == filtered.silos[1].name
    # Sent to silo one, which forwards it: filtered by the owner only.
    async with GrainClient(one, gateway_only=True) as via_one:
        assert await via_one.get_grain("FilteredAgent", b).where() == filtered.silos[1].name
    after = counts(store)
    assert after.get(f"FilteredAgent/{a}.ask", 0) - before.get(f"FilteredAgent/{a}.ask", 0) == 1
    assert after.get(f"FilteredAgent/{b}.where", 0) - before.get(
        f"FilteredAgent/{b}.where", 0) == 2
    pids = {k for k in after if k.startswith("pid:")}
    assert len(pids) == 2  # both silos ran the filter


async def test_a_raising_filter_is_a_clear_error_and_the_silo_keeps_serving(
    filtered: TestCluster, client: GrainClient,
) -> None:
    with pytest.raises(FilterError) as failed:
        await client.get_grain("FilteredAgent", "boom").where()
    assert failed.value.kind == "filter"
    assert failed.value.error_type == "ZeroDivisionError"
    assert f"{MODULE}:explode raised ZeroDivisionError: filter bug" in failed.value.message
    assert await client.get_grain("FilteredAgent", "not-boom").where()
    async with filtered.client(streamed=False) as unary:  # Gateway/Invoke, not the stream
        with pytest.raises(FilterError) as failed_unary:
            await unary.get_grain("FilteredAgent", "boom").where()
        assert failed_unary.value.error_type == "ZeroDivisionError"
        assert await unary.get_grain("FilteredAgent", "not-boom").where()


async def test_a_context_value_set_by_a_filter_reaches_the_grain(client: GrainClient) -> None:
    assert await client.get_grain("FilteredAgent", "t").tenant() == "acme"


async def test_on_incoming_call_wraps_the_result(client: GrainClient) -> None:
    assert await client.get_grain("WrappedAgent", "w").echo([1]) == {
        "wrapped": [1], "method": "echo",
    }


async def test_client_outgoing_filters_measure_refuse_and_wrap(filtered: TestCluster) -> None:
    seen: list[tuple[str, float]] = []

    async def measure(call: Call, proceed: Proceed) -> Any:
        started = time.perf_counter()
        try:
            return await proceed()
        finally:
            seen.append((call.target, time.perf_counter() - started))

    async def no_drops(call: Call, proceed: Proceed) -> Any:
        if call.method == "drop":
            raise PermissionError("this client never drops")
        return {"result": await proceed(), "args": list(call.args)}

    async with filtered.client(filters=[measure, no_drops]) as cluster:
        assert await cluster.get_grain("FilteredAgent", "c").where() == {
            "result": (await cluster.invoke("FilteredAgent", "c", "where"))["result"],
            "args": [],
        }
        with pytest.raises(PermissionDeniedError) as refused:
            await cluster.get_grain("FilteredAgent", "admin-2").drop()
        assert "this client never drops" in refused.value.message
    assert [target for target, _ in seen] == ["FilteredAgent/c.where"] * 2 + [
        "FilteredAgent/admin-2.drop"
    ]
    assert all(seconds >= 0 for _, seconds in seen)


def test_sync_client_outgoing_filters(filtered: TestCluster) -> None:
    async def wrap(call: Call, proceed: Proceed) -> Any:
        return [call.method, await proceed()]

    with SyncGrainClient(filtered.addresses, filters=[wrap]) as cluster:
        assert cluster.get_grain("FilteredAgent", "admin-3").drop() == ["drop", "dropped"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nocolon", "--filter takes MODULE:NAME"),
        ("tests.grains.no_such_filters:f", "no module named 'tests.grains.no_such_filters'"),
        (f"{MODULE}:missing", "has no attribute 'missing'"),
        (f"{MODULE}:FilteredAgent", "is not an async callable"),
    ],
)
def test_bad_filter_values_are_one_line_startup_errors(spec: str, words: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "grainery", "silo", "--grains", MODULE, "--port", "0",
         "--redis", "redis://127.0.0.1:1", "--filter", spec],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grainery: error: ") and words in lines[0], lines[0]
    assert "hint: " in lines[0]


def test_filters_from_the_environment(store: TestStore) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "grainery", "silo", "--grains", MODULE, "--port", "0",
         "--redis", "redis://127.0.0.1:1"],
        cwd=REPO, env={**clean_env(), "GRAINERY_FILTERS": f"{MODULE}:check_token,nocolon"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2 and "--filter takes MODULE:NAME, not 'nocolon'" in (
        result.stderr
    ), result.stderr


async def test_filters_given_to_the_silo_in_python_run_outside_the_flagged_ones(
    store: TestStore,
) -> None:
    """``Silo(config, filters=[...])``: the Python API's filters run first (outermost)."""
    from grainery.silo.config import SiloConfig
    from grainery.silo.runtime import Silo

    order: list[str] = []

    async def outer(call: Call, proceed: Proceed) -> Any:
        order.append("python")
        if call.key == "outer-refuses":
            raise PermissionError("refused in Python")
        return await proceed()

    config = SiloConfig(
        grains=(MODULE,), port=0, redis=store.url, cluster=f"filters-{RUN}",
        filter=(f"{MODULE}:check_token",), heartbeat_interval=0.5, lease_duration=4.0,
        drain_timeout=2.0,
    )
    silo = Silo(config, filters=[outer])
    await silo.start()
    try:
        async with GrainClient(silo.address) as cluster:
            with pytest.raises(PermissionDeniedError) as refused:
                await cluster.get_grain("FilteredAgent", "outer-refuses").drop()
            assert "refused in Python" in refused.value.message  # outer ran first
            with pytest.raises(PermissionDeniedError) as flagged:
                await cluster.get_grain("FilteredAgent", "bob").drop()
            assert "bob may not drop" in flagged.value.message  # then --filter's
            assert await cluster.get_grain("FilteredAgent", "admin-4").drop() == "dropped"
    finally:
        await silo.stop()
    assert order == ["python"] * 3
