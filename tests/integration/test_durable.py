"""Durable agents through one real silo: steps recorded and returned, retries, parallel
steps, signals before and after the wait and across a deactivation, the timeout path,
cancellation with compensation, queries and plain calls served while a run waits, a code
change detected and the run parked, the journal's fencing and retention. Failover (kill -9)
and chaos: tests/integration/test_durable_failover.py."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from grainery import RunFailedError
from grainery.client import GrainApplicationError, GrainClient
from grainery.client.errors import ActivationFencedError
from grainery.client.routing import GrainId
from grainery.client.sync import SyncGrainClient
from grainery.silo.cluster.directory import RedisGrainDirectory
from grainery.silo.journal.store import SIGNAL_IDS_KEPT, RedisJournalStore
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage.keys import KeySpace
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.grains.durable_probes import probe
from tests.integration.fault_proxy import FaultProxy
from tests.integration.helpers import live_client, unique

GRAINS = ["tests.grains.durable_probes"]


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with TestCluster(store, GRAINS, size=1, env=env) as running:
        yield running


@pytest.fixture
async def client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    async with live_client(cluster) as connected:
        yield connected


async def ledger(redis: aioredis.Redis, key: str) -> dict[str, int]:
    raw = await redis.hgetall(probe(key, "ledger"))
    return {k.decode(): int(v) for k, v in raw.items()}


async def kinds(client: GrainClient, grain_type: str, key: str) -> list[str]:
    return [e["kind"] for e in await client.get_grain(grain_type, key).journal(limit=1000)]


async def status_is(client: GrainClient, grain_type: str, key: str, wanted: str) -> dict:
    async def check() -> dict | None:
        status = await client.get_grain(grain_type, key).run_status()
        return status if status.get("status") == wanted else None

    result: dict = await eventually(check, 20, f"{grain_type}/{key} {wanted}")
    return result


async def test_steps_are_recorded_before_the_call_returns(
    client: GrainClient, redis: aioredis.Redis
) -> None:
    key = unique("pipe")
    ref = client.get_grain("Pipeline", key)
    assert await ref.run(5) == [0, 10, 20, 30, 40]
    entries = await ref.journal()
    assert [e["kind"] for e in entries] == ["$run", *["$step"] * 5, "$end"]
    assert [e["seq"] for e in entries] == list(range(1, 8))
    assert [e["data"]["id"] for e in entries[1:6]] == [f"s{i}#0" for i in range(5)]
    assert entries[-1]["data"]["status"] == "completed"
    run = entries[0]["seq"]
    assert await ledger(redis, key) == {f"Pipeline/{key}/run-{run}/s{i}#0": 1 for i in range(5)}
    assert await ref.run_status() == entries[-1]["data"]
    assert await ref.journal(after=5) == entries[5:]


async def test_queries_are_served_during_a_step_and_writing_calls_wait(
    client: GrainClient, redis: aioredis.Redis
) -> None:
    key = unique("busy")
    ref = client.get_grain("Pipeline", key)
    run = asyncio.ensure_future(ref.run(5, 3))

    async def holding() -> bool:
        return bool(await redis.hexists(probe(key, "ran"), "s3"))

    await eventually(holding, 20, "step s3 started")
    assert await ref.progress() == "s3"  # @read_only: answered while the step runs
    touch = asyncio.ensure_future(ref.touch())  # a writing call waits for the run's turn
    await redis.set(probe(key, "gate"), 1)
    assert await run == [0, 10, 20, 30, 40]
    assert await touch == "done"  # it ran only once the run's code had finished


async def test_a_wake_up_tick_during_a_long_step_does_not_hold_queries_back(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis
) -> None:
    from grainery.client.reminders import list_reminders

    key = unique("long")
    ref = client.get_grain("Pipeline", key)
    run = asyncio.ensure_future(ref.run(5, 3))

    first_due: list[float] = []

    async def ticked() -> bool:
        # The $durable reminder's first tick has been handled while step s3 still runs.
        found = await list_reminders(client.pool, cluster.addresses[0], (), "Pipeline", key,
                                     True, 5.0)
        due = next(r for r in found if r["name"] == "$durable")
        if not first_due:
            first_due.append(due["next_due"])
        return not due["delivering"] and due["next_due"] > first_due[0]

    await eventually(ticked, 20, "a $durable tick handled during step s3")
    assert not run.done()
    assert await ref.progress(timeout=5.0) == "s3"  # not queued behind the tick
    await redis.set(probe(key, "gate"), 1)
    assert await run == [0, 10, 20, 30, 40]


async def test_parallel_steps_are_recorded_by_program_order(client: GrainClient) -> None:
    key = unique("fan")
    ref = client.get_grain("Pipeline", key)
    assert await ref.fan_out(3) == [0, 10, 20, 30]
    steps = [e["data"] for e in await ref.journal() if e["kind"] == "$step"]
    assert sorted((s["i"], s["id"]) for s in steps) == [
        (0, "fetch#0"), (1, "fetch#1"), (2, "fetch#2"), (3, "sum#0")]


async def test_a_flaky_tool_is_retried_then_its_final_error_recorded(
    client: GrainClient, cluster: TestCluster
) -> None:
    ok, failing = unique("flaky"), unique("flaky")
    retries = 'grainery_durable_step_retries_total{grain_type="Flaky"}'
    before = cluster.silos[0].scrape().get(retries, 0.0)
    assert await client.get_grain("Flaky", ok).call_tool(2, 3) == "ok after 3"
    assert cluster.silos[0].scrape()[retries] == before + 2
    with pytest.raises(GrainApplicationError) as raised:
        await client.get_grain("Flaky", failing).call_tool(5, 2)
    assert raised.value.error_type == "StepFailedError"
    assert "ConnectionError" in raised.value.message
    step = next(e for e in await client.get_grain("Flaky", failing).journal()
                if e["kind"] == "$step")["data"]
    assert step["ok"] is False and step["attempts"] == 2
    assert step["error"]["type"] == "ConnectionError"


async def test_a_signal_after_the_wait_and_queries_while_it_waits(
    client: GrainClient, redis: aioredis.Redis
) -> None:
    key = unique("approve")
    ref = client.get_grain("Approval", key)
    order = asyncio.ensure_future(ref.order(500))
    await status_is(client, "Approval", key, "waiting")
    assert await ref.progress() == "awaiting approval"  # @read_only, served during the wait
    assert await ref.touch() == 1  # a plain writing call is served at the wait too
    assert not order.done()
    await ref.signal("approve", {"by": "alice"})
    assert await order == {"amount": 500, "decision": {"by": "alice"}}
    assert await ref.progress() == "done"
    assert sorted(await ledger(redis, key)) == [
        f"Approval/{key}/run-1/reserve#0", f"Approval/{key}/run-1/ship#0"]


async def test_a_signal_before_the_wait_is_buffered(client: GrainClient) -> None:
    key = unique("early")
    ref = client.get_grain("Approval", key)
    await ref.signal("approve", "pre-approved")
    assert await ref.order(500) == {"amount": 500, "decision": "pre-approved"}
    journal = await kinds(client, "Approval", key)
    assert journal == ["$signal", "$run", "$step", "$wait", "$woke", "$step", "$end"]


async def test_a_resent_signal_is_recorded_once(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis
) -> None:
    """A client that lost the answer to a signal resends it with the same id (the SDK does
    after a transport failure): the grain records it once, so one wait consumes it and the
    next wait still waits."""
    key = unique("resent")
    ref = client.get_grain("Approval", key)
    first = await ref.signal("approve", "once", signal_id="approval-1")
    assert await ref.signal("approve", "once", signal_id="approval-1") == first
    assert await ref.order(500) == {"amount": 500, "decision": "once"}
    assert await ref.signal("approve", "once", signal_id="approval-1") == first  # consumed
    second = asyncio.ensure_future(ref.order(700))
    await status_is(client, "Approval", key, "waiting")  # the resends buffered nothing
    assert not second.done()
    assert await ref.signal("approve", "twice", signal_id="approval-2") > first
    assert await second == {"amount": 700, "decision": "twice"}
    journal = await client.get_grain("Approval", key).journal(limit=1000)
    signals = [e for e in journal if e["kind"] == "$signal"]
    assert [(e["data"]["id"], e["data"]["payload"]) for e in signals] == [
        ("approval-1", "once"), ("approval-2", "twice")]
    ids = await redis.zrange(KeySpace(cluster.cluster).journal_signal_ids(GrainId("Approval", key)),
                             0, -1, withscores=True)
    assert ids == [(b"approval-1", float(first)), (b"approval-2", float(signals[1]["seq"]))]


async def test_a_signal_whose_answer_was_lost_is_resent_and_recorded_once(
    cluster: TestCluster, redis: aioredis.Redis
) -> None:
    """The connection to the silo breaks after the grain recorded a signal and before its
    answer arrived (a proxy passes the request on, holds back every byte of the reply, and
    cuts the connection once the signal is in the store): the client resends it on a new
    connection, and the grain holds it once, answering the first seq."""
    key, signal_id = unique("lost-answer"), unique("sig")
    journal_key = KeySpace(cluster.cluster).journal(GrainId("Approval", key))
    proxy = FaultProxy(int(cluster.addresses[0].rsplit(":", 1)[1])).start()
    try:
        async with GrainClient(f"127.0.0.1:{proxy.port}", gateway_only=True) as client:
            ref = client.get_grain("Approval", key)
            await ref.journal()  # activates the grain; the connection is up
            proxy.fail_next(signal_id.encode(), deliver=True, hold=True)
            sending = asyncio.ensure_future(ref.signal("approve", "once", signal_id=signal_id))

            async def recorded() -> int | None:
                entries = await redis.xrange(journal_key)
                return next((int(entry_id.split(b"-")[0]) for entry_id, fields in entries
                             if signal_id.encode() in fields[b"d"]), None)

            first = await eventually(recorded, 10, "the first attempt recorded the signal")
            assert not sending.done()  # its answer is held back
            proxy.cut()
            assert await sending == first and proxy.faults_fired == 1
            assert await ref.order(500) == {"amount": 500, "decision": "once"}
            signals = [e for e in await ref.journal() if e["kind"] == "$signal"]
            assert [(e["seq"], e["data"]["id"]) for e in signals] == [(first, signal_id)]
    finally:
        proxy.stop()


async def test_signals_without_an_id_are_each_recorded(client: GrainClient) -> None:
    """Two sends of the same signal with no id (two calls of ref.signal: each gets its own
    fresh id) are two signals."""
    key = unique("twice")
    ref = client.get_grain("Approval", key)
    one, two = await ref.signal("approve", "a"), await ref.signal("approve", "b")
    assert two > one
    assert (await ref.order(500))["decision"] == "a"
    assert (await ref.order(500))["decision"] == "b"


def test_the_sync_client_signals_and_reads_a_run(cluster: TestCluster) -> None:
    key = unique("sync")
    with SyncGrainClient(cluster.addresses) as sync:
        ref = sync.get_grain("Approval", key)
        seq = ref.signal("approve", "by script", signal_id="sync-1")
        assert ref.signal("approve", "by script", signal_id="sync-1") == seq
        assert ref.order(500) == {"amount": 500, "decision": "by script"}
        status = ref.run_status()
        assert status["status"] == "completed"
        assert ref.run_result(status["run"]) == {"amount": 500, "decision": "by script"}
        assert ref.cancel_run()["status"] == "completed"  # nothing running: the last run
        assert [e["kind"] for e in ref.journal()] == [
            "$signal", "$run", "$step", "$wait", "$woke", "$step", "$end"]


async def test_a_wait_times_out(client: GrainClient) -> None:
    key = unique("late")
    result = await client.get_grain("Approval", key).order(500, 0.2)
    assert result == {"amount": 500, "decision": "timed out"}
    woke = [e["data"] for e in await client.get_grain("Approval", key).journal()
            if e["kind"] == "$woke"]
    assert woke[0]["timed_out"] is True


async def test_a_durable_sleep_is_recorded_and_serves_calls_meanwhile(
    client: GrainClient
) -> None:
    key = unique("sleep")
    ref = client.get_grain("Approval", key)
    snooze = asyncio.ensure_future(ref.snooze(0.5))
    await status_is(client, "Approval", key, "sleeping")
    assert await ref.touch() == 1  # a writing call, served while the run sleeps
    assert await snooze == "awake"
    journal = await ref.journal()
    wait = next(e for e in journal if e["kind"] == "$wait")["data"]
    assert wait["signal"] is None and wait["until"] * 1000 >= journal[0]["time_ms"] + 500
    assert [e["kind"] for e in journal] == ["$run", "$wait", "$woke", "$step", "$end"]


async def test_a_signal_across_a_deactivation_resumes_the_run(
    client: GrainClient, redis: aioredis.Redis
) -> None:
    key = unique("restart")
    ref = client.get_grain("Approval", key)
    order = asyncio.ensure_future(ref.order(500, 60.0))
    await status_is(client, "Approval", key, "waiting")
    await ref.leave()  # the grain deactivates while its run waits

    async def deactivated() -> bool:
        return bool(await redis.hget(probe(key, "deactivated"), "requested"))

    await eventually(deactivated, 20, f"Approval/{key} deactivated")
    with pytest.raises(GrainApplicationError) as moved:  # the caller learns where to look
        await order
    assert moved.value.error_type == "RunMovedError"
    assert "ref.run_result(1)" in moved.value.message
    await ref.signal("approve", "later")  # the run replays on the new activation, then wakes
    assert await ref.run_result(1, timeout=20) == {"amount": 500, "decision": "later"}
    assert set((await ledger(redis, key)).values()) == {1}
    assert [e["kind"] for e in await ref.journal()].count("$run") == 1


async def test_cancellation_runs_the_compensation(
    client: GrainClient, redis: aioredis.Redis
) -> None:
    key = unique("cancel")
    ref = client.get_grain("Approval", key)
    run = asyncio.ensure_future(ref.guarded())
    await status_is(client, "Approval", key, "waiting")
    await ref.cancel_run(reason="customer changed their mind")
    with pytest.raises(GrainApplicationError) as raised:
        await run
    assert raised.value.error_type == "RunCancelledError"
    status = await ref.run_status()
    assert status["status"] == "cancelled"
    assert sorted(k.rsplit("/", 1)[1] for k in await ledger(redis, key)) == [
        "release#0", "reserve#0"]
    with pytest.raises(RunFailedError):
        await ref.run_result()


async def test_a_code_change_between_runs_parks_the_run(
    client: GrainClient, redis: aioredis.Redis
) -> None:
    key = unique("changed")
    ref = client.get_grain("Changing", key)
    run = asyncio.ensure_future(ref.plan())
    await status_is(client, "Changing", key, "waiting")
    await redis.set(probe(key, "version"), "2")  # the "code" of the next activation differs
    await ref.leave()
    with pytest.raises(GrainApplicationError):  # RunMovedError
        await run
    await ref.signal("go")  # reactivates: replay meets step-v2 where step-v1 was recorded
    status = await status_is(client, "Changing", key, "parked")
    assert status["error"]["type"] == "NonDeterminismError"
    assert "step-v1#0" in status["error"]["message"]
    assert "step-v2#0" in status["error"]["message"]
    assert list(await ledger(redis, key)) == [f"Changing/{key}/run-1/step-v1#0"]
    with pytest.raises(RunFailedError) as raised:
        await ref.run_result()
    assert "parked" in str(raised.value)
    ends = [e["data"] for e in await ref.journal() if e["kind"] == "$end"]
    assert [end["status"] for end in ends] == ["parked"]


async def test_a_journal_append_from_a_fenced_activation_is_refused(store: TestStore) -> None:
    redis = aioredis.Redis.from_url(store.url)
    keys = KeySpace(unique("fence"))
    directory = RedisGrainDirectory(redis, keys, SiloMetrics())
    journal = RedisJournalStore(redis, keys)
    grain = GrainId("Audit", "a")
    try:
        old = await directory.register(grain, "inc-1", "silo-1", "h:1")
        assert await journal.append(grain, old.fence.activation, "note", "1", 10) == 1
        # Its silo died: a new activation takes the grain over elsewhere.
        new = await directory.register(grain, "inc-2", "silo-2", "h:2", dead="inc-1")
        assert new.won
        with pytest.raises(ActivationFencedError):
            await journal.append(grain, old.fence.activation, "note", "2", 10)
        assert await journal.append(grain, new.fence.activation, "note", "3", 10) == 2
        assert [e.data for e in await journal.read(grain)] == [1, 3]
    finally:
        await redis.aclose()


async def test_signal_ids_are_remembered_for_the_latest_1000_signals(
    store: TestStore,
) -> None:
    """The README's bound: a resend is recognised among the grain's latest 1,000 signals;
    the set of ids never grows past that."""
    redis = aioredis.Redis.from_url(store.url)
    keys = KeySpace(unique("signal-ids"))
    directory = RedisGrainDirectory(redis, keys, SiloMetrics())
    journal = RedisJournalStore(redis, keys)
    grain = GrainId("Approval", "a")
    try:
        activation = (await directory.register(grain, "inc-1", "silo-1", "h:1")).fence.activation
        for n in range(SIGNAL_IDS_KEPT + 5):
            seq, fresh = await journal.append_once(grain, activation, "$signal", "null", 10,
                                                   once_id=f"id-{n}")
            assert (seq, fresh) == (n + 1, True)
        assert await redis.zcard(keys.journal_signal_ids(grain)) == SIGNAL_IDS_KEPT
        newest = SIGNAL_IDS_KEPT + 4
        assert await journal.append_once(grain, activation, "$signal", "null", 10,
                                         once_id=f"id-{newest}") == (newest + 1, False)
        # id-0 .. id-4 fell out; id-5 is the oldest remembered.
        assert await journal.append_once(grain, activation, "$signal", "null", 10,
                                         once_id="id-5") == (6, False)
        assert await journal.append_once(grain, activation, "$signal", "null", 10,
                                         once_id="id-4") == (SIGNAL_IDS_KEPT + 6, True)
    finally:
        await redis.aclose()


async def test_retention_keeps_the_newest_entries(client: GrainClient) -> None:
    ref = client.get_grain("Audit", unique("audit"))
    for i in range(8):
        assert await ref.note(f"n{i}") == i + 1
    assert await ref.notes() == [4, 5, 6, 7, 8]  # journal_max_entries = 5
    with pytest.raises(GrainApplicationError) as raised:
        await ref.note("x" * (1024 * 1024 + 1))
    assert raised.value.error_type == "ValueError" and "limit" in raised.value.message
    assert await ref.notes() == [4, 5, 6, 7, 8]


async def cli(cluster: TestCluster, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grainery", *args, "--target", cluster.addresses[0],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_cli_signals_reads_the_journal_and_the_status(
    client: GrainClient, cluster: TestCluster
) -> None:
    key = unique("cli")
    order = asyncio.ensure_future(client.get_grain("Approval", key).order(500))
    await status_is(client, "Approval", key, "waiting")
    sent = json.loads(await cli(cluster, "signal", "Approval", key, "approve", '{"by": "cli"}'))
    assert sent["signal"] == "approve"
    assert await order == {"amount": 500, "decision": {"by": "cli"}}
    lines = [json.loads(line) for line in (await cli(cluster, "journal", "Approval", key))
             .splitlines()]
    assert [e["kind"] for e in lines] == [
        "$run", "$step", "$wait", "$signal", "$woke", "$step", "$end"]
    assert lines[3]["seq"] == sent["seq"] and lines[3]["data"]["payload"] == {"by": "cli"}
    status = json.loads(await cli(cluster, "run-status", "Approval", key))
    assert status["status"] == "completed"
    cancelled = json.loads(await cli(cluster, "cancel-run", "Approval", key))
    assert cancelled["status"] == "completed"  # nothing running: the last run's status


async def test_the_cli_follows_a_journal(client: GrainClient, cluster: TestCluster) -> None:
    key = unique("follow")
    ref = client.get_grain("Audit", key)
    await ref.note("before")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grainery", "journal", "Audit", key, "--follow",
        "--target", cluster.addresses[0], stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert (first["seq"], first["data"]) == (1, {"text": "before"})
        await ref.note("after")  # appended while the CLI follows
        second = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert (second["seq"], second["data"]) == (2, {"text": "after"})
    finally:
        process.terminate()
        await process.wait()


async def test_bad_control_requests_get_clear_errors(cluster: TestCluster) -> None:
    import grpc

    from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
    from grainery.client.channels import ChannelPool, ClientSecurity

    pool = ChannelPool(ClientSecurity(), 4 * 1024 * 1024)
    management = pool.get(cluster.addresses[0]).management
    try:
        cases = [
            (management.Signal(pb.SignalRequest(grain_type="Approval", grain_key="k",
                                                name="go", payload_json="{nope"), timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "payload_json is not valid JSON"),
            (management.Signal(pb.SignalRequest(grain_type="Nope", grain_key="k", name="go"),
                               timeout=10), grpc.StatusCode.NOT_FOUND, "unknown grain type"),
            (management.Signal(pb.SignalRequest(grain_type="Audit", grain_key="k", name="go"),
                               timeout=10), grpc.StatusCode.UNKNOWN, "has no @durable methods"),
            (management.Signal(pb.SignalRequest(grain_type="Approval", grain_key="k",
                                                name="go", signal_id="x" * 201), timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "a signal id is at most 200 characters"),
            (management.Journal(pb.JournalRequest(grain_type="Audit", grain_key=""),
                                timeout=10), grpc.StatusCode.INVALID_ARGUMENT, "grain_key"),
        ]
        for call, code, words in cases:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == code and words in (raised.value.details() or "")
    finally:
        await pool.close()
    assert all(silo.alive for silo in cluster.silos)


async def test_the_cli_cancels_a_waiting_run(client: GrainClient, cluster: TestCluster) -> None:
    key = unique("cli-cancel")
    ref = client.get_grain("Approval", key)
    run = asyncio.ensure_future(ref.guarded())
    await status_is(client, "Approval", key, "waiting")
    answer = json.loads(await cli(cluster, "cancel-run", "Approval", key, "--reason", "ops"))
    assert answer["cancel_requested"] is True and answer["method"] == "guarded"
    with pytest.raises(GrainApplicationError) as raised:
        await run
    assert raised.value.error_type == "RunCancelledError"
    cancel = next(e for e in await ref.journal() if e["kind"] == "$cancel")
    assert cancel["data"]["reason"] == "ops"
