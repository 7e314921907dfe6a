"""Durable reminders through real silos (one module-scoped cluster of 3 silos; the last tests
add a 4th, kill one with -9 and restart the whole cluster, in that order).

Ticks are recorded outside the grains' fenced state (tests/grains/reminder_probes.py), as
``{key}/{name}@{scheduled ms}`` -> how many times that tick ran, so a tick delivered twice
shows as a count of 2, and activations are counted there too. Times compared with a tick's
scheduled time are the store's clock (``TIME``), as the reminders use. In-store logic without
silos: tests/integration/test_reminder_store.py; pure rules: tests/unit/test_reminder_model.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import pairwise

import grpc
import pytest
import redis.asyncio as aioredis

from grainery.client import GrainApplicationError, GrainClient
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.routing import GrainId
from grainery.client.sync import SyncGrainClient
from grainery.silo.cluster.partitions import partition_of
from grainery.silo.reminders.model import (
    MAX_REMINDERS_PER_GRAIN,
    MAX_UNDELIVERABLE,
    ReminderInfo,
)
from grainery.silo.reminders.store import PARTITIONS, ReminderStore
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually
from tests.grains.reminder_probes import record_key
from tests.integration.helpers import running_cluster, stop_all

GRAINS = ["tests.grains.reminder_probes"]
NO_HOOK_KEY = "nohook:1"


def ns() -> str:
    return f"n{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    env = {"GRAINERY_TEST_STORE_URL": store.url}
    with running_cluster(TestCluster(store, GRAINS, size=3, env=env)) as running:
        yield running


@pytest.fixture
async def client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    # (Tests here kill silos on purpose: a client of the live ones, no liveness check.)
    async with cluster.client() as connected:
        yield connected


async def store_now_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def records(redis: aioredis.Redis, namespace: str) -> dict[str, int]:
    raw = await redis.hgetall(record_key(namespace))
    return {k.decode(): int(v) for k, v in raw.items()}


def ticks(recorded: dict[str, int], key: str, name: str) -> dict[int, int]:
    """scheduled ms -> times run, of one reminder."""
    prefix = f"{key}/{name}@"
    return {int(k[len(prefix):]): n for k, n in recorded.items() if k.startswith(prefix)}


async def wait_ticks(
    redis: aioredis.Redis, key: str, name: str, at_least: int, after_ms: int = 0,
    timeout: float = 20.0,
) -> dict[int, int]:
    async def check() -> dict[int, int] | None:
        found = ticks(await records(redis, key.split(":", 1)[0]), key, name)
        return found if sum(1 for s in found if s > after_ms) >= at_least else None

    found: dict[int, int] = await eventually(
        check, timeout, f"{at_least} ticks of {key}/{name} scheduled after {after_ms}"
    )
    return found


def on_phase(scheduled: dict[int, int], period_ms: int) -> bool:
    first = min(scheduled)
    return all((s - first) % period_ms == 0 for s in scheduled)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str) -> Ran:
    """``grainery ARGS`` as a user runs it (a process of its own)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grainery", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def samples(silos: list[SiloProcess], name: str) -> float:
    return sum(v for s in silos if s.alive for k, v in s.scrape().items() if k.startswith(name))


# ----- the API through one cluster ------------------------------------------------------------
async def test_a_reminder_fires_while_its_grain_is_deactivated(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    key = f"{ns()}:sleeper"
    grain = client.get_grain("ReminderProbe", key)
    await grain.remind("wake", 0, 1)
    # Undeliverable reminders, checked later in the module: a grain without a hook, and one
    # of a grain type no silo hosts (left in the store by an older deployment).
    await client.get_grain("NoHook", NO_HOOK_KEY).remind("lost", 0, 1)
    await ReminderStore(redis, cluster.cluster).register("Vanished", "v", "old", 0, 1000)
    await wait_ticks(redis, key, "wake", 1)
    await grain.leave()

    async def deactivated() -> bool:
        return (await records(redis, key.split(":")[0])).get(f"{key}#deactivations") == 1

    await eventually(deactivated, 10, f"{key} deactivated")
    at_rest = await store_now_ms(redis)
    # No call reaches the grain from here on: only its reminder can activate it again.
    found = await wait_ticks(redis, key, "wake", 2, after_ms=at_rest)
    assert (await records(redis, key.split(":")[0]))[f"{key}#activations"] >= 2
    assert set(found.values()) == {1} and on_phase(found, 1000)


async def test_unregister_from_inside_its_tick_and_reregister_with_a_new_period(
    client: GrainClient, redis: aioredis.Redis,
) -> None:
    key = f"{ns()}:inside"
    grain = client.get_grain("ReminderProbe", key)
    await grain.remind("once", 0, 1)  # unregisters itself in its first tick
    await grain.remind("switch", 0, 1)  # its first tick re-registers it: due 1 s, period 2 s
    await grain.remind("witness", 0, 1)
    switched = await wait_ticks(redis, key, "switch", 3)
    later = sorted(switched)[1:]
    assert [b - a for a, b in pairwise(later)] == [2000] * (len(later) - 1)
    assert later[0] - min(switched) >= 1000
    witnessed = await wait_ticks(redis, key, "witness", 3)
    assert list(ticks(await records(redis, key.split(":")[0]), key, "once").values()) == [1]
    listed = {r["name"]: r for r in await grain.reminders()}
    assert set(listed) == {"switch", "witness"} and listed["switch"]["period"] == 2.0
    assert set(witnessed.values()) == {1}


async def test_a_runtime_reminder_reaches_its_handler_and_is_listed_only_on_request(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    key = f"{ns()}:runtime"
    grain = client.get_grain("ReminderProbe", key)
    await grain.remind_runtime("$probe:step-3", 0, 1)  # as durable agents register theirs
    await grain.remind("user", 3600, 3600)
    found = await wait_ticks(redis, key, "$probe:step-3", 2)  # via RUNTIME_REMINDERS["$probe"]
    assert set(found.values()) == {1}
    assert [r["name"] for r in await grain.reminders()] == ["user"]
    assert [r["name"] for r in await grain.reminders(True)] == ["$probe:step-3", "user"]
    listed = await run_cli("reminders", "--target", cluster.addresses[0], "ReminderProbe", key,
                           "--all", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["$probe:step-3", "user"]
    with pytest.raises(GrainApplicationError, match="reserved for the runtime"):
        await grain.forget("$probe:step-3")  # grain code's own API cannot touch it


async def test_bad_input_is_a_clear_error(client: GrainClient, cluster: TestCluster) -> None:
    grain = client.get_grain("ReminderProbe", f"{ns()}:bad")
    for name, due, period, message in [
        ("p0", 0, 0, "period must be in"), ("neg", -1, 5, "due must be in"),
        ("long", 0, 10 * 366 * 86400, "period must be in"), ("", 0, 5, "non-empty"),
        ("x" * 151, 0, 5, "longer than 150"), ("$mine", 0, 5, "reserved for the runtime"),
    ]:
        with pytest.raises(GrainApplicationError, match=message) as raised:
            await grain.remind(name, due, period)
        assert raised.value.error_type == "ValueError"
    await asyncio.gather(*(grain.remind(f"r{i}", 3600, 3600)
                           for i in range(MAX_REMINDERS_PER_GRAIN)))
    with pytest.raises(GrainApplicationError, match="limit 100 per grain") as raised:
        await grain.remind("one-too-many", 3600, 3600)
    assert raised.value.error_type == "ReminderLimitError"
    # The same rules over gRPC: INVALID_ARGUMENT; an unknown grain type: NOT_FOUND.
    async with grpc.aio.insecure_channel(cluster.addresses[0]) as channel:
        management = pb_grpc.ManagementStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await management.RegisterReminder(pb.RegisterReminderRequest(
                grain_type="ReminderProbe", grain_key="k", name="r", due_seconds=0,
                period_seconds=0.5), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "period must be in [1" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await management.ListReminders(pb.ListRemindersRequest(
                grain_type="NoSuchType", grain_key="k"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_management_rpcs_and_the_cli(client: GrainClient, cluster: TestCluster) -> None:
    key = f"{ns()}:managed"
    async with grpc.aio.insecure_channel(cluster.addresses[1]) as channel:
        management = pb_grpc.ManagementStub(channel)
        registered = await management.RegisterReminder(pb.RegisterReminderRequest(
            grain_type="ReminderProbe", grain_key=key, name="hourly", due_seconds=60,
            period_seconds=3600), timeout=10)
        listed = await client.reminders("ReminderProbe", key)
        assert listed == [{"name": "hourly", "period": 3600.0, "next_due": registered.first_due,
                           "delivering": False, "failures": 0, "disabled": ""}]
        cli = ["reminders", "--target", cluster.addresses[2]]
        shown = await run_cli(*cli, "ReminderProbe", key)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0] == f"ReminderProbe/{key}: 1 reminder"
        assert lines[1].split() == ["NAME", "PERIOD", "NEXT", "DUE", "(UTC)", "STATUS"]
        assert lines[2].split()[:2] == ["hourly", "1h"] and "due in" in lines[2]
        as_json = await run_cli(*cli, "ReminderProbe", key, "--json")
        assert json.loads(as_json.stdout) == listed
        removed = await management.UnregisterReminder(pb.UnregisterReminderRequest(
            grain_type="ReminderProbe", grain_key=key, name="hourly"), timeout=10)
        again = await management.UnregisterReminder(pb.UnregisterReminderRequest(
            grain_type="ReminderProbe", grain_key=key, name="hourly"), timeout=10)
        assert (removed.removed, again.removed) == (True, False)
    empty = await run_cli(*cli, "ReminderProbe", key)
    assert (empty.returncode, empty.stdout.strip()) == (0, f"no reminders for ReminderProbe/{key}")
    unknown = await run_cli(*cli, "NoSuchType", key)
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


def test_the_sync_client_lists_reminders(cluster: TestCluster) -> None:
    key = f"{ns()}:sync"
    with SyncGrainClient(cluster.addresses) as sync:
        sync.get_grain("ReminderProbe", key).remind("daily", 60, 86400)
        [listed] = sync.reminders("ReminderProbe", key)
        assert (listed["name"], listed["period"]) == ("daily", 86400.0)
        assert sync.get_grain("ReminderProbe", key).forget("daily") is True
        assert sync.reminders("ReminderProbe", key) == []


async def test_a_failing_hook_keeps_firing_and_an_undeliverable_reminder_is_disabled(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    key = f"{ns()}:boom"
    await client.get_grain("ReminderProbe", key).remind("boom", 0, 1)
    await wait_ticks(redis, key, "boom", 2)  # raised each time, fired again at its period

    async def disabled() -> dict[str, object] | None:
        [lost] = await client.reminders("NoHook", NO_HOOK_KEY)
        return lost if lost["disabled"] else None

    lost = await eventually(disabled, 20, "the reminder without a hook disabled")
    assert lost["failures"] == MAX_UNDELIVERABLE and lost["next_due"] is None
    assert "UnknownMethodError" in str(lost["disabled"])

    async def vanished() -> ReminderInfo | None:
        [old] = await ReminderStore(redis, cluster.cluster).of_grain("Vanished", "v")
        return old if old.disabled else None

    old = await eventually(vanished, 20, "the reminder of an unhosted grain type disabled")
    assert old.failures == MAX_UNDELIVERABLE and "UnknownGrainTypeError" in old.disabled
    outcomes = 'grainery_reminder_ticks_total{grain_type="%s",outcome="%s"}'
    assert samples(cluster.live, outcomes % ("NoHook", "undeliverable")) == MAX_UNDELIVERABLE
    assert samples(cluster.live, outcomes % ("NoHook", "disabled")) == 1
    assert samples(cluster.live, outcomes % ("Vanished", "undeliverable")) == MAX_UNDELIVERABLE
    assert samples(cluster.live, outcomes % ("ReminderProbe", "failed")) >= 2
    assert samples(cluster.live, "grainery_reminder_lateness_seconds_count") > 0
    assert samples(cluster.live, "grainery_reminder_partitions") == PARTITIONS


# ----- ownership moves: a join, a crash, a full restart (in that order) ----------------------
def partition_owner(client: GrainClient, key: str) -> str:
    p = partition_of(f"ReminderProbe/{key}", PARTITIONS)
    owner = client.router.ring.owner(GrainId("$partition/reminders", str(p)))
    assert owner is not None
    return owner.silo_id


async def test_a_join_moves_a_quarter_of_the_partitions_and_no_tick_fires_twice(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    space, count = ns(), 600
    keys = [f"{space}:{i}" for i in range(count)]
    for batch in range(0, count, 100):
        await asyncio.gather(*(client.get_grain("ReminderProbe", k).remind("j", (i % 20) / 10, 2)
                               for i, k in enumerate(keys[batch:batch + 100], batch)))

    async def all_fired(after_ms: int, times: int) -> dict[str, int] | None:
        recorded = await records(redis, space)
        fired = {k: sum(1 for s in ticks(recorded, k, "j") if s > after_ms) for k in keys}
        return recorded if min(fired.values()) >= times else None

    await eventually(lambda: all_fired(0, 1), 30, f"each of {count} reminders fired")
    owners_before = {k: partition_owner(client, k) for k in keys}
    newcomer = cluster.add_silo()
    await cluster.wait_for_stable_membership(4)
    await client.refresh_membership()
    joined = await store_now_ms(redis)
    recorded = await eventually(lambda: all_fired(joined + 1000, 2), 40,
                                "every reminder fired twice after the join settled")
    moved = sum(1 for k in keys if partition_owner(client, k) != owners_before[k])
    assert all(partition_owner(client, k) in (owners_before[k], newcomer.name) for k in keys)
    assert 0.1 * count <= moved <= 0.4 * count, moved
    owned = newcomer.scrape()["grainery_reminder_partitions"]
    assert 0.1 * PARTITIONS <= owned <= 0.4 * PARTITIONS, owned
    assert newcomer.scrape().get(
        'grainery_reminder_ticks_total{grain_type="ReminderProbe",outcome="ok"}', 0) > 0
    twice = {k: n for k, n in recorded.items() if "@" in k and n > 1}
    assert twice == {}, f"ticks that ran more than once: {sorted(twice)[:10]}"
    state = await client.get_grain("ReminderProbe", keys[0]).ticks("j")
    assert len(state) == len(set(state))  # the grain's own record agrees


async def test_kill_9_of_the_serving_silo_hands_its_reminders_to_the_new_owner(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    key = f"{ns()}:crash"
    await client.get_grain("ReminderProbe", key).remind("k", 0, 1)
    await wait_ticks(redis, key, "k", 2)
    serving = next(s for s in cluster.live if s.name == partition_owner(client, key))
    serving.kill()
    killed = await store_now_ms(redis)
    # The new owner serves it once the lease (4 s) ran out and the view changed: the wait
    # is bounded by that failover time plus one period (and a margin for a busy machine).
    found = await wait_ticks(redis, key, "k", 2, after_ms=killed, timeout=25)
    assert on_phase(found, 1000)
    # At-least-once: only a tick in flight at the moment of the kill may have run twice.
    assert sum(1 for n in found.values() if n > 1) <= 1 and max(found.values()) <= 2


async def test_reminders_survive_a_full_cluster_restart(
    client: GrainClient, cluster: TestCluster, redis: aioredis.Redis,
) -> None:
    key = f"{ns()}:restart"
    await client.get_grain("ReminderProbe", key).remind("r", 0, 1)
    await wait_ticks(redis, key, "r", 1)
    survivors = cluster.live
    stop_all(survivors)
    stopped = await store_now_ms(redis)
    survivors[0].start()  # one silo is a whole cluster again
    found = await wait_ticks(redis, key, "r", 2, after_ms=stopped, timeout=25)
    assert on_phase(found, 1000) and set(found.values()) == {1}
