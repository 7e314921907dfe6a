"""gRPC channels to silos: one per address, with the cluster's security settings.

One place decides channel options (message-size bounds, keepalive) and
credentials (TLS, mutual TLS, bearer token), so the Python client, the CLI and
silo-to-silo calls all connect the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.call_stream import CallStream
from grainery.client.context import call_metadata
from grainery.client.errors import from_rpc_error
from grainery.client.tasks import spawn

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
TOKEN_METADATA_KEY = "authorization"
# Carries the cluster's system key on silo-to-silo system calls (see silo/system_calls.py).
SYSTEM_KEY_HEADER = "grainery-system-key"


@dataclass(frozen=True)
class ClientSecurity:
    """How to reach silos: plaintext, TLS (optionally with a client certificate), a token."""

    ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    token: str | None = None
    server_name_override: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca_cert is not None

    @classmethod
    def from_files(
        cls,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        token: str | None = None,
        server_name_override: str | None = None,
    ) -> ClientSecurity:
        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return cls(read(ca_file), read(cert_file), read(key_file), token, server_name_override)

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TOKEN_METADATA_KEY, f"Bearer {self.token}"),) if self.token else ()


def channel_options(max_message_bytes: int, security: ClientSecurity) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # Fail fast on a dead silo instead of backing off for up to two minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if security.server_name_override:
        options.append(("grpc.ssl_target_name_override", security.server_name_override))
    return options


def open_channel(
    address: str,
    security: ClientSecurity,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.aio.Channel:
    options = channel_options(max_message_bytes, security)
    if not security.tls:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=security.ca_cert,
        private_key=security.client_key,
        certificate_chain=security.client_cert,
    )
    return grpc.aio.secure_channel(address, credentials, options=options)


class SiloStubs:
    """The stubs of one silo connection, and its multiplexed call stream (opened lazily)."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self.channel = channel
        self.gateway = pb_grpc.GatewayStub(channel)
        self.directory = pb_grpc.DirectoryStub(channel)
        self.management = pb_grpc.ManagementStub(channel)
        self._metadata = metadata
        self._stream: CallStream | None = None

        # Calls using this connection right now, and whether the pool has let go of it: a
        # retired connection closes when its last call ends, never under a running call.
        self.users = 0
        self.retired = False

    @property
    def stream(self) -> CallStream:
        if self._stream is None:
            self._stream = CallStream(self.channel, self._metadata)
        return self._stream

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
        await self.channel.close()


class ChannelPool:
    """Lazily opened channels keyed by address.

    Invariant: the pool holds connections only to addresses its owner still cares about.
    Silos come and go (every restart is a new port or pod IP), so the owner calls
    :meth:`retain` with the live addresses after each membership change; connections to the
    rest are dropped at once and closed as soon as no call is using them.
    """

    def __init__(self, security: ClientSecurity, max_message_bytes: int) -> None:
        self.security = security
        self.max_message_bytes = max_message_bytes
        self._stubs: dict[str, SiloStubs] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._draining: set[SiloStubs] = set()  # evicted, waiting for their last call
        # Set by a silo once it has read its cluster's key; a client pool never has one.
        self.system_key: str | None = None

    def get(self, address: str) -> SiloStubs:
        stubs = self._stubs.get(address)
        if stubs is None:
            channel = open_channel(address, self.security, self.max_message_bytes)
            stubs = self._stubs[address] = SiloStubs(channel, self.security.call_metadata())
        return stubs

    @property
    def addresses(self) -> list[str]:
        return list(self._stubs)

    @contextmanager
    def borrow(self, address: str) -> Iterator[SiloStubs]:
        """The connection to ``address``, kept open (even if evicted) until the block ends."""
        stubs = self.get(address)
        stubs.users += 1
        try:
            yield stubs
        finally:
            self._give_back(stubs)

    def _give_back(self, stubs: SiloStubs) -> None:
        stubs.users -= 1
        if stubs.retired and stubs.users == 0:
            self._close_later(stubs)

    def retain(self, addresses: Iterable[str]) -> list[str]:
        """Drop the connections to every address not in ``addresses``; returns those dropped.
        A dropped connection still in use closes when its last call ends."""
        keep = set(addresses)
        gone = [address for address in self._stubs if address not in keep]
        for address in gone:
            stubs = self._stubs.pop(address)
            stubs.retired = True
            if stubs.users == 0:
                self._close_later(stubs)
            else:
                self._draining.add(stubs)
        return gone

    def _close_later(self, stubs: SiloStubs) -> None:
        self._draining.discard(stubs)
        spawn(stubs.close(), name="grainery-close-channel", owner=self._closing)

    async def invoke(
        self, address: str, request: pb.InvokeRequest, timeout: float, streamed: bool,
        context: Mapping[str, str] | None = None, chain: tuple[str, ...] = (),
        trace: Mapping[str, str] | None = None,
    ) -> pb.InvokeResponse:
        """One call to one silo, over its call stream or unary, carrying the request context,
        call chain and W3C trace context (``StreamCall`` fields, or metadata); raises
        GrainError. A system call (``request.system``, silo to silo) goes unary with the
        cluster's ``system_key``."""
        # borrow(), inlined: this is every call's path, and a generator-based context
        # manager costs more than the rest of this method.
        stubs = self.get(address)
        stubs.users += 1
        try:
            if streamed and CallStream.accepts(request):
                return await stubs.stream.invoke(request, timeout, context, chain, trace)
            metadata = self.security.call_metadata()
            if context or chain:
                metadata += call_metadata(context or {}, chain)
            if trace:
                metadata += tuple(trace.items())
            if request.system:
                metadata += ((SYSTEM_KEY_HEADER, self.system_key or ""),)
            try:
                response: pb.InvokeResponse = await stubs.gateway.Invoke(
                    request, timeout=timeout, metadata=metadata
                )
            except grpc.aio.AioRpcError as rpc_error:
                raise from_rpc_error(rpc_error) from None
            return response
        finally:
            self._give_back(stubs)

    async def close(self) -> None:
        stubs, self._stubs = [*self._stubs.values(), *self._draining], {}
        self._draining = set()
        for item in stubs:
            await item.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
