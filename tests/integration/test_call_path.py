"""The call path end to end (issue 9, items 3, 5 and 16), with real silo processes.

Nested calls inherit the caller's deadline on every hop (local, forwarded, call stream);
errors of inner calls reach the outer caller marked as such; keyword arguments work;
oversized arguments are ``too_large``; grain failures are in the silo's log; a store
failure before any grain code ran is retry-safe; a killed silo is a transport error.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from grainery.client import (
    DeadlineExceededError,
    GrainClient,
    GrainError,
    InnerCallError,
    InvalidArgumentsError,
    PlacementUnavailableError,
    SiloUnavailableError,
    SyncGrainClient,
    TooLargeError,
    TransportError,
)
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import running_cluster, unique

GRAINS = ["tests.grains.calls"]
MAX_MESSAGE = 256 * 1024
# gRPC rounds a timeout up to its wire units (grpc-timeout header), so a hop may see a hair
# more than the caller gave; without propagation the inner call would see the 30 s default.
ROUNDING = 0.25


@pytest.fixture(scope="module")
def one_silo(store: TestStore) -> Iterator[TestCluster]:
    cluster = TestCluster(store, GRAINS, size=1,
                          extra_args=["--max-message-bytes", str(MAX_MESSAGE)])
    with running_cluster(cluster):
        yield cluster


@pytest.fixture(scope="module")
def two_silos(store: TestStore) -> Iterator[TestCluster]:
    cluster = TestCluster(store, GRAINS, size=2)
    with running_cluster(cluster):
        yield cluster


@pytest.fixture
async def client(one_silo: TestCluster) -> AsyncIterator[GrainClient]:
    async with one_silo.client() as connected:
        yield connected


@pytest.fixture
async def pair(two_silos: TestCluster) -> AsyncIterator[GrainClient]:
    await two_silos.wait_for_stable_membership(2)
    async with two_silos.client() as connected:
        await connected.wait_for_members(2)
        yield connected


async def keys_on(client: GrainClient, silo_id: str, count: int, prefix: str,
                  grain_type: str = "Probe") -> list[str]:
    """Keys of ``grain_type`` whose activation lives on ``silo_id`` (the ring places each
    type/key pair on its own; the client calls the ring owner, which activates it)."""
    found: list[str] = []
    while len(found) < count:
        key = unique(prefix)
        if await client.get_grain(grain_type, key).where(timeout=10) == silo_id:
            found.append(key)
    return found


# ----- item 3: deadlines -----------------------------------------------------------------
async def test_nested_call_inherits_the_deadline_locally(client: GrainClient) -> None:
    outer, inner = client.get_grain("Probe", unique("a")), unique("b")
    seen = await outer.remaining_via(inner, timeout=2.0)
    assert 0 < seen <= 2.0, f"the inner call saw {seen:.2f}s of a 2s call"
    # An explicit, shorter timeout of the inner call wins over the caller's remaining time.
    assert 0 < await outer.remaining_via(inner, 0.5, timeout=10.0) <= 0.5 + ROUNDING


async def test_nested_call_inherits_the_deadline_over_the_call_stream(
    pair: GrainClient, two_silos: TestCluster,
) -> None:
    first, second = (silo.name for silo in two_silos.silos)
    [here] = await keys_on(pair, first, 1, "here")
    [there] = await keys_on(pair, second, 1, "there")
    assert await pair.get_grain("Probe", there).where() == second
    seen = await pair.get_grain("Probe", here).remaining_via(there, timeout=2.0)
    assert 0 < seen <= 2.0 + ROUNDING, f"the call on the other silo saw {seen:.2f}s of 2s"


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "unary"])
async def test_forwarded_call_keeps_the_callers_deadline(
    pair: GrainClient, two_silos: TestCluster, streamed: bool,
) -> None:
    first, second = two_silos.silos
    [there] = await keys_on(pair, second.name, 1, "fwd")
    # Through the first silo only: it forwards the call to the second.
    [far] = await keys_on(pair, second.name, 1, "fwd", "Cycle")
    async with GrainClient(first.address, gateway_only=True, streamed=streamed) as gateway:
        seen = await gateway.get_grain("Probe", there).remaining(timeout=2.0)
        # Keyword arguments survive the forward too.
        assert await gateway.get_grain("Cycle", far).scale(3, by=3) == 9
    assert 0 < seen <= 2.0 + ROUNDING, f"the forwarded call saw {seen:.2f}s of a 2s call"


async def test_on_activate_does_not_run_within_the_first_callers_deadline(
    client: GrainClient,
) -> None:
    """An activation is shared by every caller waiting for it and is never cut short by one
    caller's deadline, so its on_activate's calls get their own default timeout."""
    relay = client.get_grain("Probe", unique("activating-relay"))
    seen = await relay.relay("Activator", unique("act"), "seen_in_activation", timeout=2.0)
    assert seen > 2.0 + ROUNDING, f"on_activate's call was cut to {seen:.2f}s"


async def _cycle_is_freed(client: GrainClient, a: str, b: str) -> None:
    with pytest.raises(GrainError):
        await client.get_grain("Cycle", a).start(b, timeout=2.0)
    # Both grains serve again soon after the 2 s deadline (without the fix: after 30 s).
    for key in (a, b):
        ref = client.get_grain("Cycle", key)
        await eventually(lambda ref=ref: ref.hello(timeout=0.5), 6.0,  # type: ignore[misc]
                         f"Cycle/{key} answering after a cycle called with timeout 2")


async def test_call_cycle_frees_the_grains_within_the_callers_deadline(
    client: GrainClient,
) -> None:
    await _cycle_is_freed(client, unique("cycle-a"), unique("cycle-b"))


async def test_call_cycle_across_silos_frees_the_grains(
    pair: GrainClient, two_silos: TestCluster,
) -> None:
    first, second = (silo.name for silo in two_silos.silos)
    [a] = await keys_on(pair, first, 1, "xa", "Cycle")
    [b] = await keys_on(pair, second, 1, "xb", "Cycle")
    await _cycle_is_freed(pair, a, b)


# ----- item 3: inner errors ----------------------------------------------------------------
async def _assert_inner_errors_marked(client: GrainClient, relay_key: str, target: str) -> None:
    relay = client.get_grain("Probe", relay_key)
    with pytest.raises(InnerCallError) as caught:
        await relay.relay("Cycle", target, "scale", 1, 2, 3)  # wrong arity for scale
    error = caught.value
    assert not isinstance(error, InvalidArgumentsError), "the outer arguments were fine"
    assert error.kind == "inner_call" and error.inner_kind == "invalid_arguments"
    assert error.code == grpc.StatusCode.UNKNOWN and not error.retry_safe
    assert error.message.startswith(
        f"inner call to Cycle/{target}.scale failed (invalid_arguments): scale()"), error.message

    with pytest.raises(InnerCallError) as caught:
        await relay.relay("Cycle", target, "explode", "kaboom")
    assert caught.value.inner_kind == "application"
    assert "ValueError: kaboom" in caught.value.message

    with pytest.raises(InnerCallError) as caught:
        await relay.relay("Cycle", target, "no_such_method")
    assert caught.value.inner_kind == "unknown_method"

    # The outer call's own bad arguments are still its own.
    with pytest.raises(InvalidArgumentsError) as own:
        await relay.relay()
    assert not isinstance(own.value, InnerCallError)

    # Two levels deep: each hop is named, the innermost kind is kept.
    with pytest.raises(InnerCallError) as caught:
        await relay.relay("Probe", unique("mid"), "relay", "Cycle", target, "explode", "deep")
    assert caught.value.inner_kind == "application"
    assert "inner call to Probe/mid-" in caught.value.message
    assert f"inner call to Cycle/{target}.explode failed (application)" in caught.value.message

    # Inside the calling grain the inner error keeps its class, marked with its origin.
    assert await relay.catch_inner_deadline(target) == (
        f"caught DeadlineExceededError from Cycle/{target}.sleep")


async def test_inner_call_errors_are_marked_as_inner(client: GrainClient) -> None:
    await _assert_inner_errors_marked(client, unique("relay"), unique("target"))


async def test_inner_call_errors_across_silos_are_marked_as_inner(
    pair: GrainClient, two_silos: TestCluster,
) -> None:
    first, second = (silo.name for silo in two_silos.silos)
    [relay] = await keys_on(pair, first, 1, "relay")
    [target] = await keys_on(pair, second, 1, "target", "Cycle")
    await _assert_inner_errors_marked(pair, relay, target)


# ----- item 5: keyword arguments, sizes, logs ---------------------------------------------
async def test_keyword_arguments_from_the_python_client(client: GrainClient) -> None:
    grain = client.get_grain("Cycle", unique("kw"))
    assert await grain.scale(3, by=4) == 12
    assert await grain.scale(x=3) == 3
    assert await grain.call("scale", 2, by=5, timeout=5.0) == 10
    assert await grain.needs_unit(3, unit="kg") == "3kg"  # required keyword-only parameter
    assert await client.invoke("Cycle", grain.key, "scale", [2], kwargs={"by": 3}) == 6
    with pytest.raises(InvalidArgumentsError, match=r"unexpected keyword argument 'per'"):
        await grain.scale(3, per=4)
    with pytest.raises(InvalidArgumentsError, match=r"missing required keyword argument.*unit"):
        await grain.needs_unit(3)
    with pytest.raises(InvalidArgumentsError, match="multiple values for argument 'x'"):
        await grain.scale(3, x=4)
    # Grain to grain, with keywords passed on.
    relay = client.get_grain("Probe", unique("kw-relay"))
    assert await relay.relay("Cycle", grain.key, "scale", 7, by=2) == 14


def test_keyword_arguments_from_the_sync_client(one_silo: TestCluster) -> None:
    with SyncGrainClient(one_silo.addresses) as sync:
        grain = sync.get_grain("Cycle", unique("kw-sync"))
        assert grain.scale(3, by=3) == 9
        assert grain.call("needs_unit", 1, unit="m", timeout=5.0) == "1m"
        with pytest.raises(InvalidArgumentsError, match="unexpected keyword argument"):
            grain.scale(1, nope=1)


def test_keyword_arguments_from_the_cli(one_silo: TestCluster) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "grainery", "call", "--target", one_silo.addresses[0], *args],
            capture_output=True, text=True, timeout=30, check=False,
        )

    ok = cli("Cycle", unique("kw-cli"), "scale", "[3]", "--kwargs", '{"by": 5}')
    assert (ok.returncode, ok.stdout.strip()) == (0, "15"), ok.stderr
    bad = cli("Cycle", unique("kw-cli"), "scale", "[3]", "--kwargs", '{"per": 5}')
    assert bad.returncode == 1 and "unexpected keyword argument 'per'" in bad.stderr, bad.stderr


async def test_kwargs_json_on_the_wire(one_silo: TestCluster) -> None:
    async with grpc.aio.insecure_channel(one_silo.silos[0].address) as channel:
        gateway = pb_grpc.GatewayStub(channel)
        reply = await gateway.Invoke(pb.InvokeRequest(
            grain_type="Cycle", grain_key="wire", method="scale", args_json="[6]",
            kwargs_json='{"by": 7}'), timeout=10)
        assert reply.result_json == "42"
        for bad, message in (('[1]', "JSON object"), ('{"by": ', "not valid JSON"),
                             ('{"per": 1}', "unexpected keyword argument 'per'")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gateway.Invoke(pb.InvokeRequest(
                    grain_type="Cycle", grain_key="wire", method="scale", args_json="[6]",
                    kwargs_json=bad), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (caught.value.details() or "")


async def test_oversized_argument_is_too_large_not_overloaded(client: GrainClient) -> None:
    grain = client.get_grain("Cycle", unique("big"))
    # Over the client's own bound (4 MiB): refused before sending.
    with pytest.raises(TooLargeError) as caught:
        await grain.echo("x" * (5 * 1024 * 1024), timeout=5.0)
    assert caught.value.kind == "too_large"
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # Under the client's bound, over the silo's (--max-message-bytes): gRPC's own refusal.
    with pytest.raises(TooLargeError) as caught:
        await grain.echo("x" * (MAX_MESSAGE + 1), timeout=5.0)
    assert not caught.value.retry_safe
    with pytest.raises(TooLargeError):
        await grain.echo(blob="x" * (5 * 1024 * 1024))
    assert await grain.echo("fits") == ["fits"]


async def test_grain_failures_and_registration_are_logged(
    client: GrainClient, one_silo: TestCluster,
) -> None:
    silo: SiloProcess = one_silo.silos[0]
    marker = unique("boom")
    with pytest.raises(GrainError):
        await client.get_grain("Cycle", "logged").explode(marker)

    def log_text() -> str:
        return silo.log_path.read_text(errors="replace")

    async def traceback_logged() -> bool:
        text = log_text()
        at = text.find(f"Cycle/logged.explode raised ValueError: {marker}")
        return at >= 0 and "Traceback (most recent call last)" in text[at:] \
            and "raise ValueError(message)" in text[at:]

    await eventually(traceback_logged, 5.0, "the grain's traceback in the silo log")
    text = log_text()
    assert "registered grain type Cycle" in text and "scale" in text
    assert "skipped public method Probe.not_async is a plain def" in text


# ----- item 16: retry safety -------------------------------------------------------------
async def test_store_unreachable_during_activation_is_retry_safe() -> None:
    store = TestStore().start()
    cluster = TestCluster(store, GRAINS, size=1)
    try:
        cluster.start()
        silo = cluster.silos[0]
        async with cluster.client() as client:
            assert await client.get_grain("Probe", "warm").where() == silo.name
            store.stop()
            # Unary, one attempt: the silo says the call did not run.
            async with grpc.aio.insecure_channel(silo.address) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await pb_grpc.GatewayStub(channel).Invoke(pb.InvokeRequest(
                        grain_type="Probe", grain_key=unique("cold"), method="where"),
                        timeout=3.0)
            trailers = {k: v for k, v in caught.value.trailing_metadata() or ()}
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert trailers.get("grainery-retry-safe") == "1", trailers
            assert trailers.get("grainery-error") == "placement_unavailable", trailers
            # The client retries such refusals; when it gives up, its error says the call
            # did not run, and why.
            with pytest.raises(DeadlineExceededError) as gave_up:
                await client.get_grain("Probe", unique("cold")).where(timeout=1.5)
            error = gave_up.value
            assert error.retry_safe, repr(error)
            # The silo may fence itself meanwhile (its lease lapses): also "did not run".
            assert isinstance(error.__cause__, PlacementUnavailableError
                              | SiloUnavailableError), repr(error.__cause__)
            assert "did not run" in error.message
    finally:
        for silo in cluster.silos:
            if silo.alive:
                silo.kill()
        store.stop()


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "unary"])
async def test_killed_silo_mid_call_is_a_transport_error(
    store: TestStore, streamed: bool,
) -> None:
    cluster = TestCluster(store, GRAINS, size=1)
    with running_cluster(cluster):
        silo = cluster.silos[0]
        async with cluster.client(streamed=streamed) as client:
            call = asyncio.create_task(
                client.get_grain("Cycle", unique("slow")).sleep(30.0, timeout=20.0))
            async with grpc.aio.insecure_channel(silo.address) as channel:
                stats = pb_grpc.ManagementStub(channel)

                async def in_flight() -> bool:
                    reply = await stats.SiloStats(pb.SiloStatsRequest(), timeout=2)
                    return reply.calls_in_flight == 1

                await eventually(in_flight, 10.0, "the slow call running on the silo")
            silo.kill()
            with pytest.raises(GrainError) as caught:
                await call
            assert type(caught.value) is TransportError, repr(caught.value)
            assert not caught.value.retry_safe  # it was running: it may have had effects


async def test_killed_silo_under_load_never_surfaces_a_bare_internal_error(
    store: TestStore,
) -> None:
    """Calls being written to the call stream when the silo dies: grpcio reports the failed
    write as INTERNAL ("Internal error from Core"); the caller must see a TransportError."""
    cluster = TestCluster(store, GRAINS, size=1)
    with running_cluster(cluster):
        silo = cluster.silos[0]
        async with cluster.client() as client:
            payload = "x" * 60_000  # frames take a while to write: kills land mid-write
            done = 0
            errors: list[GrainError] = []

            async def worker(i: int) -> None:
                nonlocal done
                grain = client.get_grain("Cycle", f"load-{i % 20}")
                while True:
                    try:
                        await grain.echo(payload, timeout=2.0)
                    except GrainError as error:
                        errors.append(error)
                        return
                    done += 1

            workers = [asyncio.create_task(worker(i)) for i in range(100)]
            await eventually(lambda: asyncio.sleep(0, done > 200), 20.0, "calls flowing")
            silo.kill()
            await asyncio.gather(*workers)
    bare = [e for e in errors if type(e) is GrainError]
    assert not bare, f"{len(bare)} bare errors, e.g. {bare[0]!r}"
    for error in errors:
        assert isinstance(error, TransportError) or (
            isinstance(error, DeadlineExceededError) and error.retry_safe
        ), repr(error)
