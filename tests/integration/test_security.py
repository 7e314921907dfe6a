"""TLS, mutual TLS and bearer tokens on the gRPC port, against real silo processes.

Throwaway certificates are generated with ``cryptography`` for every run: a CA, a
server certificate for 127.0.0.1/localhost (also usable as a client certificate,
since silos present it to each other under mutual TLS) and a client certificate.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grainery.client import GrainClient
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.channels import ClientSecurity, open_channel
from grainery.client.errors import UnauthenticatedError
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import GRAINS, running_cluster
from tests.integration.pki import Pki, make_pki

TOKEN = "s3cret-token-for-tests"
REPO = Path(__file__).resolve().parents[2]


# ----- throwaway PKI --------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ----- clusters --------------------------------------------------------------
async def wait_members(addresses: list[str], security: ClientSecurity, count: int,
                       timeout: float = 20.0) -> None:
    """TestCluster.wait_for_stable_membership speaks plaintext; this one uses ``security``."""

    async def stable() -> bool:
        seen: list[tuple[int, int]] = []
        for address in addresses:
            channel = open_channel(address, security)
            try:
                reply = await pb_grpc.DirectoryStub(channel).Members(
                    pb.MembersRequest(), timeout=2.0, metadata=security.call_metadata())
                seen.append((reply.version, sum(m.state == "active" for m in reply.members)))
            finally:
                await channel.close()
        if len({v for v, _ in seen}) == 1 and all(a == count for _, a in seen):
            return True
        raise AssertionError(f"(version, active) seen: {seen}")

    await eventually(stable, timeout, f"membership stable with {count} active")


@pytest.fixture(scope="module")
def tls_cluster(store: TestStore, pki: Pki) -> Iterator[TestCluster]:
    """Two silos with TLS (server certificate only) and a bearer token."""
    args = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-ca", pki.ca,
            "--token", TOKEN]
    with running_cluster(TestCluster(store, GRAINS, size=2, extra_args=args)) as cluster:
        asyncio.run(wait_members(cluster.addresses, pki.security(token=TOKEN), 2))
        yield cluster


@pytest.fixture(scope="module")
def mtls_cluster(store: TestStore, pki: Pki) -> Iterator[TestCluster]:
    """Two silos that require client certificates (and present theirs to each other)."""
    args = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
            "--tls-client-ca", pki.ca]
    with running_cluster(TestCluster(store, GRAINS, size=2, extra_args=args)) as cluster:
        asyncio.run(wait_members(cluster.addresses, pki.security(client_cert=True), 2))
        yield cluster


def _invoke_request(grain_type: str, key: str, method: str, args_json: str = "[]"
                    ) -> pb.InvokeRequest:
    return pb.InvokeRequest(grain_type=grain_type, grain_key=key, method=method,
                            args_json=args_json)


async def _raw_invoke(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = (),
                      key: str = "raw") -> pb.InvokeResponse:
    stub = pb_grpc.GatewayStub(channel)
    reply: pb.InvokeResponse = await stub.Invoke(
        _invoke_request("Recorder", key, "ping"), timeout=5.0, metadata=metadata)
    return reply


# ----- TLS ---------------------------------------------------------------------
async def test_tls_client_works(tls_cluster: TestCluster, pki: Pki) -> None:
    async with GrainClient(tls_cluster.addresses, security=pki.security(token=TOKEN),
                           timeout=10) as cluster:
        assert await cluster.get_grain("Recorder", "tls-a").add(3) == 3
        assert await cluster.get_grain("Recorder", "tls-a").add(4) == 7
        # The client learnt the membership over TLS too.
        assert len(cluster.router.snapshot.members) == 2


async def test_plaintext_client_refused_by_tls_silo(tls_cluster: TestCluster) -> None:
    async with grpc.aio.insecure_channel(tls_cluster.addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _raw_invoke(channel, (("authorization", f"Bearer {TOKEN}"),))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_with_untrusted_ca_refused(tls_cluster: TestCluster, pki: Pki) -> None:
    security = ClientSecurity.from_files(pki.other_ca, token=TOKEN)
    channel = open_channel(tls_cluster.addresses[0], security)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _raw_invoke(channel, security.call_metadata())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


# ----- tokens ------------------------------------------------------------------
@pytest.mark.parametrize("metadata", [
    (),
    (("authorization", "Bearer wrong-token"),),
    (("authorization", TOKEN),),  # no "Bearer " scheme
    (("authorization", f"Bearer {TOKEN}x"),),
    (("x-token", TOKEN),),
], ids=["missing", "wrong", "no-scheme", "suffix", "other-header"])
async def test_bad_token_unauthenticated(
    tls_cluster: TestCluster, pki: Pki, metadata: tuple[tuple[str, str], ...]
) -> None:
    channel = open_channel(tls_cluster.addresses[0], pki.security())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _raw_invoke(channel, metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        trailers = {k: v for k, v in caught.value.trailing_metadata() or ()}
        assert trailers.get("grainery-error") == "unauthenticated"
        assert TOKEN not in (caught.value.details() or "")
        # Directory and Management are guarded as well.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.DirectoryStub(channel).Members(pb.MembersRequest(), timeout=5,
                                                         metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.ManagementStub(channel).SiloStats(pb.SiloStatsRequest(), timeout=5,
                                                            metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


async def test_python_client_with_wrong_token_gets_unauthenticated_error(
    tls_cluster: TestCluster, pki: Pki
) -> None:
    async with GrainClient(tls_cluster.addresses, security=pki.security(token="nope"),
                           timeout=5, refresh_interval=0) as cluster:
        with pytest.raises(UnauthenticatedError):
            await cluster.get_grain("Recorder", "tls-denied").add(1)


async def test_right_token_accepted(tls_cluster: TestCluster, pki: Pki) -> None:
    security = pki.security(token=TOKEN)
    channel = open_channel(tls_cluster.addresses[0], security)
    try:
        reply = await _raw_invoke(channel, security.call_metadata())
        assert reply.silo_id in {"silo1", "silo2"}
    finally:
        await channel.close()


async def test_health_open_without_token(tls_cluster: TestCluster, pki: Pki) -> None:
    channel = open_channel(tls_cluster.addresses[0], pki.security())
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()


async def _list_services(channel: grpc.aio.Channel,
                         metadata: tuple[tuple[str, str], ...]) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        # No delay needed: the silo refuses a stream only after its first message (auth.py),
        # so the refusal never races this write.
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(requests(), timeout=5, metadata=metadata):
        names.update(s.name for s in reply.list_services_response.service)
    return names


async def test_reflection_streams_are_guarded_by_the_token(
    tls_cluster: TestCluster, pki: Pki
) -> None:
    """Reflection is a bidirectional stream: denial must be a stream status, not a crash."""
    channel = open_channel(tls_cluster.addresses[0], pki.security())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _list_services(channel, ())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        names = await _list_services(channel, (("authorization", f"Bearer {TOKEN}"),))
        assert "grainery.v1.Gateway" in names
    finally:
        await channel.close()


def test_cli_call_with_tls_and_token(tls_cluster: TestCluster, pki: Pki) -> None:
    command = [sys.executable, "-m", "grainery", "call", "--target", tls_cluster.addresses[0],
               "--tls-ca", pki.ca, "--token", TOKEN, "Recorder", "cli-tls", "add", "[5]"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAINERY_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)  # noqa: S603
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"

    wrong = subprocess.run([*command[:9], "wrong", *command[10:]], capture_output=True,  # noqa: S603
                           text=True, timeout=60, cwd=REPO, env=env)
    assert wrong.returncode != 0
    assert "UNAUTHENTICATED" in wrong.stderr
    assert "Traceback" not in wrong.stderr


# ----- silo to silo ---------------------------------------------------------
async def _forwarding_check(addresses: list[str], security: ClientSecurity, prefix: str) -> None:
    """Call grains through one pinned silo; those the other silo owns must run there."""
    entry = addresses[0]
    channel = open_channel(entry, security)
    metadata = security.call_metadata()
    try:
        directory = pb_grpc.DirectoryStub(channel)
        gateway = pb_grpc.GatewayStub(channel)
        members = await directory.Members(pb.MembersRequest(), timeout=5, metadata=metadata)
        entry_id = next(m.silo_id for m in members.members if m.address == entry)
        forwarded = 0
        for i in range(40):
            key = f"{prefix}-{i}"
            located = await directory.Locate(pb.LocateRequest(grain_type="Recorder",
                                                              grain_key=key),
                                             timeout=5, metadata=metadata)
            if located.address == entry:
                continue
            reply = await gateway.Invoke(_invoke_request("Recorder", key, "add", "[2]"),
                                         timeout=10, metadata=metadata)
            assert reply.result_json == "2"
            assert reply.silo_id == located.silo_id != entry_id, (reply, located)
            assert reply.address == located.address
            forwarded += 1
            if forwarded >= 3:
                break
        assert forwarded >= 1, "no key owned by the other silo among 40"
    finally:
        await channel.close()


async def test_silo_to_silo_forwarding_with_tls_and_token(
    tls_cluster: TestCluster, pki: Pki
) -> None:
    await _forwarding_check(tls_cluster.addresses, pki.security(token=TOKEN), "fwd-tls")


# ----- mutual TLS ---------------------------------------------------------------
async def test_mtls_refuses_client_without_certificate(mtls_cluster: TestCluster,
                                                       pki: Pki) -> None:
    channel = open_channel(mtls_cluster.addresses[0], pki.security())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _raw_invoke(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


async def test_mtls_accepts_client_with_certificate(mtls_cluster: TestCluster, pki: Pki) -> None:
    async with GrainClient(mtls_cluster.addresses, security=pki.security(client_cert=True),
                           timeout=10) as cluster:
        assert await cluster.get_grain("Recorder", "mtls-a").add(1) == 1


async def test_mtls_silo_to_silo_forwarding(mtls_cluster: TestCluster, pki: Pki) -> None:
    await _forwarding_check(mtls_cluster.addresses, pki.security(client_cert=True), "fwd-mtls")
