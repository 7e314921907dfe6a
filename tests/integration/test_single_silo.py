"""One real silo process: errors on the wire, activation, turns, idle collection, restart, drain.

Every wait is a poll with a deadline whose failure names the grain and what was seen;
activations are observed through the probe grains' Redis event lists.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from grainery.client import (
    ActivationFailedError,
    DeadlineExceededError,
    GrainApplicationError,
    GrainClient,
    GrainError,
    InvalidArgumentsError,
    StaleStateError,
    SyncGrainClient,
    UnknownGrainTypeError,
    UnknownMethodError,
)
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.routing import GrainId
from grainery.silo.storage.keys import KeySpace
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually, eventually_sync
from tests.integration.helpers import unique

GRAINS = ["tests.grains.probes"]
MAX_MESSAGE = 256 * 1024
REPO = Path(__file__).resolve().parents[2]

STATUS = grpc.StatusCode


def new_cluster(store: TestStore, extra_args: tuple[str, ...] = ()) -> TestCluster:
    return TestCluster(store, GRAINS, size=1, env={"GRAINERY_TEST_REDIS": store.url},
                       extra_args=["--max-message-bytes", str(MAX_MESSAGE), *extra_args])


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    with new_cluster(store) as running:
        yield running


@pytest.fixture
def silo(cluster: TestCluster) -> SiloProcess:
    silo = cluster.silos[0]
    assert silo.alive, f"the module's silo died:\n{silo.log_tail()}"
    return silo


@pytest.fixture
async def client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    async with cluster.client() as connected:
        yield connected


@pytest.fixture
async def gateway(silo: SiloProcess) -> AsyncIterator[pb_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(silo.address) as channel:
        yield pb_grpc.GatewayStub(channel)


@pytest.fixture
async def events(store: TestStore) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(store.url, decode_responses=True)
    yield redis
    await redis.aclose()


# ----- helpers ------------------------------------------------------------------
async def invoke(gateway: pb_grpc.GatewayStub, grain_type: str, key: str, method: str,
                 args_json: str = "[]", timeout: float = 10.0) -> object:
    request = pb.InvokeRequest(grain_type=grain_type, grain_key=key, method=method,
                               args_json=args_json)
    reply = await gateway.Invoke(request, timeout=timeout)
    return json.loads(reply.result_json)


async def invoke_error(gateway: pb_grpc.GatewayStub, grain_type: str, key: str, method: str,
                       args_json: str = "[]", timeout: float = 10.0) -> grpc.aio.AioRpcError:
    try:
        result = await invoke(gateway, grain_type, key, method, args_json, timeout)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError(f"{grain_type}/{key}.{method}({args_json[:80]}) succeeded: {result!r}")


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: v for k, v in (error.trailing_metadata() or ()) if isinstance(v, str)}


async def event_list(redis: aioredis.Redis, kind: str, grain_type: str, key: str) -> list[str]:
    items: list[str] = await redis.lrange(f"events:{kind}:{grain_type}:{key}", 0, -1)
    return items


async def wait_events(redis: aioredis.Redis, kind: str, grain_type: str, key: str, count: int,
                      timeout: float = 10.0) -> list[str]:
    """Until the grain has at least ``count`` events of ``kind``."""
    async def enough() -> list[str] | None:
        seen = await event_list(redis, kind, grain_type, key)
        return seen if len(seen) >= count else None

    found: list[str] = await eventually(
        enough, timeout, f"{grain_type}/{key}: {count} {kind} event(s)")
    return found


def parse(event: str) -> tuple[str, str, str]:
    silo_id, activation, detail = event.split("|", 2)  # ids sort in registration order
    return silo_id, activation, detail


def metric(silo: SiloProcess, sample: str) -> float:
    return silo.scrape().get(sample, 0.0)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ----- every error case, each followed by a call that works ------------------------------
NOT_CALLABLE = [
    ("unknown-method", "Recorder", "nope", "[]"),
    ("private", "Guarded", "_private", "[]"),
    ("dunder", "Guarded", "__aenter__", "[]"),
    ("dunder-init", "Guarded", "__init__", "[]"),
    ("dunder-class", "Guarded", "__class__", "[]"),
    ("sync-method", "Guarded", "sync_method", "[]"),
    ("attribute", "Guarded", "data", "[]"),
    ("property", "Recorder", "key", "[]"),
    ("write_state", "Recorder", "write_state", "[]"),
    ("read_state", "Recorder", "read_state", "[]"),
    ("clear_state", "Recorder", "clear_state", "[]"),
    ("on_activate-overridden", "Guarded", "on_activate", "[]"),
    ("on_activate-inherited-override", "GuardedChild", "on_activate", "[]"),
    ("on_deactivate", "Recorder", "on_deactivate", '["idle"]'),
    ("get_grain", "Relay", "get_grain", '["Recorder", "x"]'),
    ("deactivate_on_idle", "Recorder", "deactivate_on_idle", "[]"),
    ("empty-method", "Recorder", "", "[]"),
]

BAD_ARGUMENTS = [
    ("invalid-json", "Recorder", "add", "[1,", "not valid JSON"),
    ("non-array", "Recorder", "add", '{"n": 1}', "JSON array"),
    ("scalar", "Recorder", "add", "5", "JSON array"),
    ("too-few", "Recorder", "add", "[]", "add() takes 1"),
    ("too-many", "Recorder", "add", "[1, 2]", "add() takes 1"),
    ("too-deep", "Boom", "echo", nested(65), "deeper than 64"),
    ("long-key", "Recorder", "add", "[1]", "key longer than"),
    # Callable since keyword arguments exist (kwargs_json), but not without its keyword.
    ("kw-only-missing", "Boom", "kw_only", "[]", "missing required keyword argument"),
]

# A call that must work on the same grain afterwards: (method, args_json, expected result).
FOLLOW_UP = {
    "Recorder": ("add", "[1]", 1),
    "Guarded": ("ok", "[]", "ok"),
    "GuardedChild": ("child", "[]", "child"),
    "Relay": ("forward_add", None, 1),
    "Boom": ("echo", "[1, \"a\"]", [1, "a"]),
}


async def assert_grain_serves(gateway: pb_grpc.GatewayStub, grain_type: str, key: str) -> None:
    method, args_json, expected = FOLLOW_UP[grain_type]
    if args_json is None:  # Relay: forward to a fresh Recorder
        args_json = json.dumps([unique("relayed"), 1])
    result = await invoke(gateway, grain_type, key, method, args_json)
    assert result == expected, f"{grain_type}/{key}.{method} after an error returned {result!r}"


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, f"server internals leaked: {text}"


async def test_unknown_grain_type_is_not_found(gateway: pb_grpc.GatewayStub) -> None:
    error = await invoke_error(gateway, "NoSuchGrain", "k", "ping")
    assert error.code() == STATUS.NOT_FOUND
    assert trailers(error)["grainery-error"] == "unknown_grain_type"
    assert "NoSuchGrain" in (error.details() or "")
    await assert_grain_serves(gateway, "Recorder", unique("after-unknown-type"))


@pytest.mark.parametrize(("grain_type", "method", "args_json"),
                         [case[1:] for case in NOT_CALLABLE], ids=[c[0] for c in NOT_CALLABLE])
async def test_non_callable_names_are_unimplemented(
    gateway: pb_grpc.GatewayStub, events: aioredis.Redis, grain_type: str, method: str,
    args_json: str,
) -> None:
    key = unique("not-callable")
    error = await invoke_error(gateway, grain_type, key, method, args_json)
    assert error.code() == STATUS.UNIMPLEMENTED, (error.code(), error.details())
    assert trailers(error)["grainery-error"] == "unknown_method"
    assert trailers(error)["grainery-retry-safe"] == "0"
    assert_no_traceback(error.details() or "")
    if grain_type == "Recorder":  # rejected before anything was activated
        assert await event_list(events, "activate", "Recorder", key) == []
    await assert_grain_serves(gateway, grain_type, key)


@pytest.mark.parametrize(("grain_type", "method", "args_json", "message"),
                         [case[1:] for case in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS])
async def test_bad_arguments_are_invalid_argument(
    gateway: pb_grpc.GatewayStub, events: aioredis.Redis, grain_type: str, method: str,
    args_json: str, message: str,
) -> None:
    key = unique("bad-args")
    bad_key = "k" * 5000 if message == "key longer than" else key
    error = await invoke_error(gateway, grain_type, bad_key, method, args_json)
    assert error.code() == STATUS.INVALID_ARGUMENT, (error.code(), error.details())
    assert trailers(error)["grainery-error"] == "invalid_arguments"
    assert message in (error.details() or ""), error.details()
    if grain_type == "Recorder":
        assert await event_list(events, "activate", "Recorder", key) == []
    await assert_grain_serves(gateway, grain_type, key)


async def test_application_exception_is_unknown_with_type_and_message(
    gateway: pb_grpc.GatewayStub,
) -> None:
    key = unique("boom")
    error = await invoke_error(gateway, "Boom", key, "explode", '["the reactor is on fire"]')
    assert error.code() == STATUS.UNKNOWN
    assert error.details() == "ValueError: the reactor is on fire"
    assert trailers(error)["grainery-error"] == "application"
    assert trailers(error)["grainery-error-type"] == "ValueError"
    assert_no_traceback(error.details() or "")
    await assert_grain_serves(gateway, "Boom", key)  # the same activation keeps serving


async def test_unserialisable_result_is_an_application_error(
    gateway: pb_grpc.GatewayStub,
) -> None:
    key = unique("boom")
    error = await invoke_error(gateway, "Boom", key, "unserialisable")
    assert error.code() == STATUS.UNKNOWN
    assert trailers(error)["grainery-error"] == "application"
    assert "not JSON-serialisable" in (error.details() or "")
    assert_no_traceback(error.details() or "")
    await assert_grain_serves(gateway, "Boom", key)


async def test_client_raises_the_matching_exception_classes(client: GrainClient) -> None:
    key = unique("classes")
    with pytest.raises(UnknownGrainTypeError):
        await client.get_grain("NoSuchGrain", key).ping()
    with pytest.raises(UnknownMethodError):
        await client.get_grain("Recorder", key).write_state()
    with pytest.raises(InvalidArgumentsError):
        await client.get_grain("Recorder", key).add(1, 2)
    with pytest.raises(GrainApplicationError) as caught:
        await client.get_grain("Boom", key).explode("nope")
    assert caught.value.error_type == "ValueError"
    assert caught.value.message == "ValueError: nope"
    assert await client.get_grain("Recorder", key).add(2) == 2


async def test_stale_write_is_aborted_and_the_grain_recovers(
    cluster: TestCluster, gateway: pb_grpc.GatewayStub, events: aioredis.Redis,
) -> None:
    key = unique("stale")
    assert await invoke(gateway, "Recorder", key, "add", "[1]") == 1
    state_key = KeySpace(cluster.cluster).state(GrainId("Recorder", key))
    assert state_key == f"grainery:{cluster.cluster}:{{Recorder/{key}}}:state"
    stored_before = await events.hgetall(state_key)
    assert json.loads(stored_before["data"]) == {"value": 1}
    await events.hset(state_key, "etag", "other:1")  # someone else wrote behind its back

    error = await invoke_error(gateway, "Recorder", key, "add", "[5]")
    assert error.code() == STATUS.ABORTED
    assert trailers(error)["grainery-error"] == "stale_state"
    assert "stale" in (error.details() or "")
    stored = await events.hgetall(state_key)
    assert stored["data"] == stored_before["data"], "a stale write overwrote the stored state"

    # The conflicting activation is dropped; the next call reloads the stored state.
    assert await invoke(gateway, "Recorder", key, "add", "[5]") == 6
    deactivations = await wait_events(events, "deactivate", "Recorder", key, 1)
    assert parse(deactivations[0])[2] == "conflict"
    activations = await event_list(events, "activate", "Recorder", key)
    assert len(activations) == 2 and parse(activations[0])[1] < parse(activations[1])[1]


async def test_stale_write_raises_stale_state_error_in_the_client(
    cluster: TestCluster, client: GrainClient, events: aioredis.Redis,
) -> None:
    key = unique("stale-client")
    grain = client.get_grain("Recorder", key)
    assert await grain.add(2) == 2
    await events.hset(KeySpace(cluster.cluster).state(GrainId("Recorder", key)), "etag", "x:1")
    with pytest.raises(StaleStateError):
        await grain.add(1)
    assert await grain.get() == 2


async def test_deadline_exceeded(client: GrainClient, gateway: pb_grpc.GatewayStub) -> None:
    key = unique("deadline")
    # A 1 s call that returned DEADLINE_EXCEEDED was cut short at the deadline (had it run
    # to the end, it would have succeeded).
    error = await invoke_error(gateway, "Turns", key, "sleep", "[1.0]", timeout=0.3)
    assert error.code() == STATUS.DEADLINE_EXCEEDED
    with pytest.raises(DeadlineExceededError):
        await client.get_grain("Turns", key).sleep(1.0, timeout=0.3)
    # The turns that outlived their callers finish; the grain then serves again.
    assert await client.get_grain("Turns", key).report(timeout=10) == {"overlaps": 0,
                                                                       "order": []}


async def test_oversize_request_is_resource_exhausted(gateway: pb_grpc.GatewayStub) -> None:
    key = unique("oversize")
    big = json.dumps(["x" * (MAX_MESSAGE + 1)])
    error = await invoke_error(gateway, "Boom", key, "echo", big)
    assert error.code() == STATUS.RESOURCE_EXHAUSTED
    await assert_grain_serves(gateway, "Boom", key)


async def test_client_fails_fast_on_an_oversize_request(
    client: GrainClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the first attempt: an oversize request is never retried until the deadline."""
    attempts = 0
    invoke = client.pool.invoke

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        return await invoke(*args, **kwargs)

    monkeypatch.setattr(client.pool, "invoke", counted)
    with pytest.raises(GrainError) as caught:
        await client.get_grain("Boom", unique("oversize")).echo("x" * (MAX_MESSAGE + 1),
                                                                timeout=3.0)
    assert not isinstance(caught.value, DeadlineExceededError), caught.value
    assert attempts == 1, f"{attempts} attempts"


# ----- activation ------------------------------------------------------------------
async def test_1000_concurrent_first_calls_make_one_activation_and_one_read(
    silo: SiloProcess, client: GrainClient, events: aioredis.Redis,
) -> None:
    key = unique("crowd")
    reads = 'grainery_storage_operations_total{operation="read",outcome="ok"}'
    created = 'grainery_activations_created_total{grain_type="Recorder"}'
    reads_before, created_before = metric(silo, reads), metric(silo, created)
    grain = client.get_grain("Recorder", key)
    results = await asyncio.gather(*(grain.ping() for _ in range(1000)))
    assert set(results) == {silo.name}
    activations = await event_list(events, "activate", "Recorder", key)
    assert len(activations) == 1, f"Recorder/{key} activated {len(activations)} times"
    assert metric(silo, reads) - reads_before == 1
    assert metric(silo, created) - created_before == 1


async def test_turns_run_one_at_a_time_in_arrival_order(client: GrainClient) -> None:
    grain = client.get_grain("Turns", unique("turns"))
    assert await grain.track(0) == 0  # activated: later calls queue on it in arrival order
    # Started in order from one task: each is queued on the call stream before the next
    # starts, and the silo queues them on the grain in the order they arrive.
    calls = [asyncio.ensure_future(grain.track(i)) for i in range(1, 200)]
    assert [0, *await asyncio.gather(*calls)] == list(range(200))
    report = await grain.report()
    assert report["overlaps"] == 0, report
    assert report["order"] == list(range(200)), report["order"]


async def test_idle_deactivation_and_reactivation_with_state(
    client: GrainClient, events: aioredis.Redis,
) -> None:
    key = unique("sleepy")
    grain = client.get_grain("Sleepy", key)
    assert await grain.add(5) == 5
    deactivations = await wait_events(events, "deactivate", "Sleepy", key, 1)
    assert parse(deactivations[0])[2] == "idle"
    assert len(await event_list(events, "activate", "Sleepy", key)) == 1
    assert await grain.add(1) == 6  # reactivated with its state
    activations = await event_list(events, "activate", "Sleepy", key)
    assert len(activations) == 2
    assert parse(activations[1])[1] > parse(activations[0])[1]


async def test_calls_racing_a_deactivation_are_served_by_the_next_activation(
    client: GrainClient, events: aioredis.Redis,
) -> None:
    key = unique("race")
    grain = client.get_grain("Sleepy", key)
    assert await grain.add(1) == 1
    expected, results, raced = 1, [1], 0
    pauses = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    attempts = 30
    # Sleepy goes idle after 0.5 s and its on_deactivate takes 0.2 s: fire bursts of calls at
    # varying pauses (the pauses aim the bursts; they wait for nothing) until some land while
    # the deactivation is running. Such a burst raced it: the deactivation ended during the
    # burst (it had begun before: the burst's calls keep the grain busy) and a new activation
    # served the burst's calls.
    for attempt in range(attempts):
        if raced >= 2:
            break
        await asyncio.sleep(pauses[attempt % len(pauses)])
        deactivated = len(await event_list(events, "deactivate", "Sleepy", key))
        activated = len(await event_list(events, "activate", "Sleepy", key))
        burst = await asyncio.gather(*(grain.add(1) for _ in range(5)))
        results += burst
        expected += 5
        if (len(await event_list(events, "deactivate", "Sleepy", key)) > deactivated
                and len(await event_list(events, "activate", "Sleepy", key)) > activated):
            raced += 1
    assert raced, f"Sleepy/{key}: no burst of calls met a running deactivation in {attempts}"
    assert sorted(results) == list(range(1, expected + 1)), "increments lost or duplicated"
    assert await grain.add(0) == expected

    activations = [parse(e) for e in await event_list(events, "activate", "Sleepy", key)]
    deactivations = [parse(e) for e in await event_list(events, "deactivate", "Sleepy", key)]
    act_epochs = [epoch for _, epoch, _ in activations]
    deact_epochs = [epoch for _, epoch, _ in deactivations]
    assert act_epochs == sorted(set(act_epochs)), f"activation epochs {act_epochs}"
    # Alternation: the i-th deactivation ends the i-th activation, and at most the last
    # activation is still alive; never two activations without a deactivation between.
    assert len(activations) - len(deactivations) in (0, 1), (act_epochs, deact_epochs)
    assert deact_epochs == act_epochs[:len(deact_epochs)], (act_epochs, deact_epochs)
    assert all(detail == "idle" for _, _, detail in deactivations), deactivations


async def test_activation_failure_then_retry(
    cluster: TestCluster, client: GrainClient, gateway: pb_grpc.GatewayStub,
    events: aioredis.Redis,
) -> None:
    key = unique("fail-once")
    error = await invoke_error(gateway, "Flaky", key, "attempts_so_far")
    assert error.code() == STATUS.FAILED_PRECONDITION
    assert trailers(error)["grainery-error"] == "activation_failed"
    details = error.details() or ""
    assert f"activation of Flaky/{key} failed" in details, details
    assert "RuntimeError" in details and "refused" in details, details
    assert_no_traceback(details)
    # Nothing half-activated: no directory entry is left behind.
    directory = KeySpace(cluster.cluster).directory(GrainId("Flaky", key))
    assert await events.hget(directory, "inc") is None
    assert await client.get_grain("Flaky", key).attempts_so_far() == 2


async def test_activation_that_always_fails_keeps_failing_and_the_silo_serves(
    client: GrainClient, gateway: pb_grpc.GatewayStub,
) -> None:
    key = unique("fail-always")
    for attempt in range(1, 4):
        with pytest.raises(ActivationFailedError, match=f"activation {attempt} of"):
            await client.get_grain("Flaky", key).attempts_so_far()
    await assert_grain_serves(gateway, "Recorder", unique("still-serving"))


async def test_grain_to_grain_call(
    silo: SiloProcess, client: GrainClient, events: aioredis.Redis,
) -> None:
    key = unique("relayed")
    relay = client.get_grain("Relay", unique("relay"))
    assert await relay.forward_add(key, 3) == 3
    assert await relay.forward_add(key, 4) == 7
    assert await relay.where(key) == silo.name
    assert await client.get_grain("Recorder", key).get() == 7
    assert len(await event_list(events, "activate", "Recorder", key)) == 1


# ----- the CLI and the sync client ------------------------------------------------------
def grainery(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("grainery")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "grainery"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_cli_call_prints_json(silo: SiloProcess) -> None:
    key = unique("cli")
    first = grainery("call", "--target", silo.address, "Recorder", key, "add", "[2]")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == 2
    echo = grainery("call", "--target", silo.address, "Boom", key, "echo", '[{"a": [1, null]}]')
    assert echo.returncode == 0, echo.stderr
    assert json.loads(echo.stdout) == [{"a": [1, None]}]
    no_args = grainery("call", "--target", silo.address, "Recorder", key, "get")
    assert (no_args.returncode, json.loads(no_args.stdout)) == (0, 2)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["NoSuchGrain", "k", "ping"], "NoSuchGrain"),
        (["Recorder", "k", "write_state"], "write_state"),
        (["Recorder", "k", "add", "[1,"], "JSON"),
        (["Recorder", "k", "add", "[1, 2]"], "add()"),
        (["Boom", "k", "explode", '["cli boom"]'], "ValueError: cli boom"),
    ],
    ids=["unknown-type", "forbidden-method", "bad-json", "arity", "app-error"],
)
def test_cli_call_errors_are_one_line_on_stderr(
    silo: SiloProcess, args: list[str], needle: str,
) -> None:
    result = grainery("call", "--target", silo.address, *args)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert needle in lines[0], lines[0]


def test_cli_call_to_an_unreachable_silo_fails_with_one_line() -> None:
    from grainery.silo.storage.embedded import free_port

    result = grainery("call", "--target", f"127.0.0.1:{free_port()}", "--timeout", "3",
                      "Recorder", "k", "get", timeout=30)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"


def test_cli_status_lists_the_silo(silo: SiloProcess) -> None:
    text = grainery("status", "--target", silo.address)
    assert text.returncode == 0, text.stderr
    assert silo.name in text.stdout and silo.address in text.stdout
    report = grainery("status", "--target", silo.address, "--json")
    assert report.returncode == 0, report.stderr
    members = json.loads(report.stdout)["members"]
    assert [(m["silo_id"], m["address"], m["state"]) for m in members] == [
        (silo.name, silo.address, "active")]
    assert members[0]["ring_share"] == pytest.approx(1.0)
    assert isinstance(members[0]["activations"], dict)


def test_sync_client(silo: SiloProcess) -> None:
    key = unique("sync")
    with SyncGrainClient(silo.address) as sync:
        grain = sync.get_grain("Recorder", key)
        assert grain.add(4) == 4
        assert grain.call("add", 1) == 5
        assert sync.invoke("Recorder", key, "get") == 5
        with pytest.raises(GrainApplicationError, match="ValueError: sync"):
            sync.get_grain("Boom", key).explode("sync")
        with pytest.raises(DeadlineExceededError):
            sync.get_grain("Turns", key).sleep(1.0, timeout=0.2)


# ----- restart and drain (own silos) ---------------------------------------------------------
async def test_state_survives_a_silo_restart(store: TestStore) -> None:
    key = unique("durable")
    with new_cluster(store) as own:
        async with own.client() as client:
            assert await client.get_grain("Recorder", key).add(7) == 7
        silo = own.silos[0]
        await asyncio.to_thread(silo.stop, 20)
        assert not silo.alive
        marker = f"silo {silo.name} serving on"
        runs = silo.log_path.read_text().count(marker)
        own.restart_silo(silo)
        # start() may have matched the first run's "serving" line: wait for the new process.
        def serving_again() -> bool:
            assert silo.alive, f"restarted silo exited:\n{silo.log_tail()}"
            return silo.log_path.read_text().count(marker) > runs

        await asyncio.to_thread(eventually_sync, serving_again, 20, "the restarted silo serving")
        async with own.client() as client:
            assert await client.get_grain("Recorder", key).get() == 7
            assert await client.get_grain("Recorder", key).add(1) == 8


def test_sigterm_on_an_idle_silo_exits_promptly(store: TestStore) -> None:
    with new_cluster(store) as own:
        silo = own.silos[0]
        started = time.monotonic()
        code = silo.stop(timeout=5)
        assert code == 0, f"exit code {code} after {time.monotonic() - started:.1f}s:\n" \
            f"{silo.log_tail(12)}"


async def calls_in_flight(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stats = await pb_grpc.ManagementStub(channel).SiloStats(pb.SiloStatsRequest(), timeout=2)
    return int(stats.calls_in_flight)


async def test_sigterm_drains_calls_in_flight(store: TestStore, events: aioredis.Redis) -> None:
    run = unique("drain")
    with new_cluster(store) as own:
        silo = own.silos[0]
        recorders = [f"{run}-rec{i}" for i in range(3)]
        async with own.client() as client:
            for key in recorders:
                assert await client.get_grain("Recorder", key).add(1) == 1
            sleepers = [asyncio.ensure_future(client.get_grain("Turns", f"{run}-t{i}").sleep(1.0))
                        for i in range(20)]
            async def all_arrived() -> bool:
                in_flight = await calls_in_flight(silo.address)
                if in_flight != 20:
                    raise AssertionError(f"{in_flight} calls in flight")
                return True

            await eventually(all_arrived, 5, "the 20 Turns.sleep calls in flight on the silo")

            silo.signal(signal.SIGTERM)
            async with grpc.aio.insecure_channel(silo.address) as channel:
                gateway = pb_grpc.GatewayStub(channel)

                async def refused_or_drained() -> grpc.aio.AioRpcError | str | None:
                    if all(s.done() for s in sleepers):
                        return "drained"  # no call was refused: reported below
                    try:
                        await invoke(gateway, "Recorder", unique("late"), "ping", timeout=2)
                    except grpc.aio.AioRpcError as error:
                        return error
                    return None

                outcome = await eventually(refused_or_drained, 20, "a new call refused")
            refused = outcome if isinstance(outcome, grpc.aio.AioRpcError) else None
            assert await asyncio.gather(*sleepers) == [1.0] * 20
        code = await asyncio.to_thread(silo.stop, 20)
        log = silo.log_path.read_text(errors="replace")
        assert code == 0, f"silo exited with {code}:\n{silo.log_tail()}"

    assert refused is not None, "no new call was refused while the silo drained"
    assert refused.code() == STATUS.UNAVAILABLE, (refused.code(), refused.details())
    assert trailers(refused)["grainery-error"] == "unavailable"
    assert trailers(refused)["grainery-retry-safe"] == "1"
    assert "draining" in log
    for key in recorders:
        deactivations = await event_list(events, "deactivate", "Recorder", key)
        assert [parse(e)[2] for e in deactivations] == ["shutdown"], (key, deactivations)
    members = await events.hgetall(KeySpace(own.cluster).members)
    assert members and all(json.loads(m)["state"] == "left" for m in members.values()), members
