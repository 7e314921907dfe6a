"""Durable runs survive kill -9: a 5-step run killed after step 3 resumes on the other silo
by itself (no caller, no query: only the store is watched) and runs steps 4 and 5 only,
each effect applied once; and a small chaos run (supply-chain order plans while silos are
killed and restarted) where every plan completes, every effect lands once and every journal
is complete and in order. The full-size chaos run (200 plans) is marked soak."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from examples.supply_chain import INITIAL_STOCK
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually
from tests.grains.durable_probes import probe
from tests.integration.helpers import unique

GRAINS = ["tests.grains.durable_probes", "examples.supply_chain"]


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with TestCluster(store, GRAINS, size=3, env=env) as running:
        yield running


def silo_named(cluster: TestCluster, name: str) -> SiloProcess:
    return next(s for s in cluster.silos if s.name == name)


async def restart(cluster: TestCluster, silo: SiloProcess) -> None:
    await asyncio.to_thread(cluster.restart_silo, silo)


async def test_a_run_killed_after_step_3_resumes_elsewhere_by_itself(
    cluster: TestCluster, redis: aioredis.Redis
) -> None:
    key = unique("replay")
    async with cluster.client() as client:
        caller = asyncio.ensure_future(client.get_grain("Pipeline", key).run(5, 3))

        async def at_step_4() -> bytes | None:
            where: bytes | None = await redis.hget(probe(key, "where"), "s3")
            return where

        victim = silo_named(cluster, (await eventually(at_step_4, 20, "step 4 started")).decode())
        assert len(await redis.hgetall(probe(key, "ledger"))) == 3
        victim.kill()  # kill -9 while step 4 waits at its gate, not yet applied
        await redis.set(probe(key, "gate"), 1)
        with pytest.raises(Exception):  # noqa: B017 - the caller's call died with its silo
            await caller

    # Nobody calls or queries the grain from here on: it must resume on its own.
    async def finished() -> dict[bytes, bytes] | None:
        ledger: dict[bytes, bytes] = await redis.hgetall(probe(key, "ledger"))
        return ledger if len(ledger) == 5 else None

    try:
        ledger = await eventually(finished, 40, "the run finished on another silo")
        assert sorted(int(v) for v in ledger.values()) == [1] * 5  # each effect once
        ran = {k.decode(): int(v) for k, v in (await redis.hgetall(probe(key, "ran"))).items()}
        assert ran == {"s0": 1, "s1": 1, "s2": 1, "s3": 2, "s4": 1}  # steps 1-3 not re-run
        keys = await redis.lrange(probe(key, "keys:s3"), 0, -1)
        assert len(keys) == 2 and keys[0] == keys[1]  # step 4's key, the same on both silos
        where = {k.decode(): v.decode()
                 for k, v in (await redis.hgetall(probe(key, "where"))).items()}
        assert where["s3"] != victim.name and where["s4"] != victim.name
        async with cluster.client() as client:
            journal = await client.get_grain("Pipeline", key).journal()
            assert [e["kind"] for e in journal] == ["$run", *["$step"] * 5, "$end"]
            assert [e["data"]["i"] for e in journal[1:6]] == [0, 1, 2, 3, 4]
            assert await client.get_grain("Pipeline", key).run_status() == journal[-1]["data"]
    finally:
        await restart(cluster, victim)


async def test_a_sleep_survives_kill_9_and_ends_by_itself(
    cluster: TestCluster, redis: aioredis.Redis
) -> None:
    key = unique("sleeper")
    async with cluster.client() as client:
        ref = client.get_grain("Approval", key)
        caller = asyncio.ensure_future(ref.snooze(2.0))

        async def sleeping() -> bool:
            return (await ref.run_status()).get("status") == "sleeping"

        await eventually(sleeping, 20, f"Approval/{key} sleeping")
        victim = silo_named(cluster, await ref.where())
        victim.kill()
        with pytest.raises(Exception):  # noqa: B017 - the caller's call died with its silo
            await caller

    # Nobody calls the grain: the $durable reminder activates it elsewhere, the sleep ends.
    async def woke() -> dict[bytes, bytes] | None:
        ledger: dict[bytes, bytes] = await redis.hgetall(probe(key, "ledger"))
        return ledger or None

    try:
        ledger = await eventually(woke, 40, "the sleep ended on another silo")
        assert list(ledger.values()) == [b"1"]
        async with cluster.client() as client:
            kinds = [e["kind"] for e in await client.get_grain("Approval", key).journal()]
        assert kinds == ["$run", "$wait", "$woke", "$step", "$end"]
    finally:
        await restart(cluster, victim)


def orders(count: int, tag: str) -> list[dict[str, Any]]:
    """Supply-chain orders; every third needs an approval, every fifth is from a blocked
    supplier (its plan compensates)."""
    made = []
    for i in range(count):
        quantity = 60 if i % 3 == 0 else 5  # gadgets at 20: 1200 needs approval
        supplier = "shady-co" if i % 5 == 4 else "acme"
        made.append({"id": f"{tag}-{i}", "sku": "gadget", "quantity": quantity,
                     "supplier": supplier})
    return made


async def chaos(cluster: TestCluster, redis: aioredis.Redis, count: int, kills: int,
                seed: int) -> None:
    rng = random.Random(seed)
    tag = unique("chaos")
    plans = orders(count, tag)
    by_id = {p["id"]: p for p in plans}
    async with cluster.client() as client:
        callers = [asyncio.ensure_future(client.get_grain("OrderAgent", o["id"]).fulfil(o))
                   for o in plans]
        needs_approval = [o["id"] for o in plans if o["quantity"] == 60]
        for round_ in range(kills):
            share = needs_approval[round_::kills]

            async def hosts(share: list[str] = share) -> list[str]:
                # Where this round's plans wait for their approval (once all of them do).
                progress = [await client.get_grain("OrderAgent", order_id).progress()
                            for order_id in share]
                waiting = [p["silo"] for p in progress
                           if p["stage"].startswith("awaiting approval")]
                return waiting if len(waiting) == len(share) else []

            where = await eventually(hosts, 30, f"round {round_}: plans waiting")
            victim = silo_named(cluster, rng.choice(where))
            victim.kill()
            # Approvals go out while a silo is down: some reach waiting plans on survivors,
            # some the plans that were waiting on the killed silo, resumed elsewhere.
            for order_id in share:
                await client.get_grain("OrderAgent", order_id).signal(
                    "approval", {"approved": True, "by": f"round {round_}"})
            await restart(cluster, victim)
        for caller in callers:
            caller.cancel()
        results = {}
        for plan in plans:
            results[plan["id"]] = await client.get_grain("OrderAgent", plan["id"]).run_result(
                timeout=60)
        for plan in plans:
            expected = "rejected" if plan["supplier"] == "shady-co" else "confirmed"
            assert results[plan["id"]]["status"] == expected, (plan, results[plan["id"]])
            journal = await client.get_grain("OrderAgent", plan["id"]).journal(limit=1000)
            kinds = [e["kind"] for e in journal]
            assert kinds[0] == "$run" and kinds[-1] == "$end" and kinds.count("$end") == 1
            assert [e["seq"] for e in journal] == sorted({e["seq"] for e in journal})
            indices = [e["data"]["i"] for e in journal if e["kind"] in ("$step", "$wait")]
            assert sorted(indices) == list(range(len(indices))), (plan["id"], kinds)
        # Every effect once: one reservation per confirmed plan, of its quantity (a step
        # that ran twice under its step key is absorbed by the inventory; a replay that
        # re-ran it under another key would show as a second reservation), none left by
        # rejected plans; and the stock plus what is reserved is what there was.
        held = await reservations(redis, cluster)
        mine = {k: q for k, q in held.items() if f"OrderAgent/{tag}-" in k}
        confirmed = sorted(p["id"] for p in plans if results[p["id"]]["status"] == "confirmed")
        assert sorted(k.split("/")[1] for k in mine) == confirmed
        assert all(q == by_id[k.split("/")[1]]["quantity"] for k, q in mine.items())
        stock = await client.get_grain("Inventory", "gadget").stock()
        assert stock + sum(held.values()) == INITIAL_STOCK
    resumed = sum(silo.scrape().get(
        'grainery_durable_runs_total{event="resumed",grain_type="OrderAgent"}', 0.0)
        for silo in cluster.live)
    assert resumed >= 1  # the kills did hit plans in flight (survivors' counts only)


async def reservations(redis: aioredis.Redis, cluster: TestCluster) -> dict[str, int]:
    """The gadget inventory's reservations (step key -> quantity), read from its state."""
    raw = await redis.hget(f"grainery:{cluster.cluster}:{{Inventory/gadget}}:state", "data")
    return {k: int(v) for k, v in orjson.loads(raw)["reservations"].items()} if raw else {}


async def test_chaos_small(cluster: TestCluster, redis: aioredis.Redis) -> None:
    seed = int(os.environ.get("GRAINERY_CHAOS_SEED", "13"))
    await chaos(cluster, redis, count=30, kills=2, seed=seed)


@pytest.mark.soak
async def test_chaos_200_workflows(
    cluster: TestCluster, redis: aioredis.Redis, request: pytest.FixtureRequest
) -> None:
    """The issue's size (about 45 s here): run only when asked for, with ``-m soak``."""
    if "soak" not in str(request.config.getoption("-m") or ""):
        pytest.skip("the 200-plan chaos run is a soak test: select it with -m soak")
    seed = int(os.environ.get("GRAINERY_CHAOS_SEED", "7"))
    await chaos(cluster, redis, count=200, kills=6, seed=seed)
