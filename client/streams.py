"""Streams from the Python client: ``cluster.get_stream(ns, key)``.

``token = await stream.publish(event)`` and
``async for token, event in stream.subscribe(from_token=...)``. Any silo serves any stream
(the events are in the store), so calls spread over the active silos. A subscription that
loses its silo (a crash, a restart, a broken connection) reconnects to another one and
resumes after the last token it yielded: nothing is lost, nothing repeated, as long as the
events are still retained.
"""

from __future__ import annotations

import asyncio
import json
import random
import weakref
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.errors import (
    GrainError,
    InvalidArgumentsError,
    OverloadedError,
    SiloUnavailableError,
    TransportError,
    from_rpc_error,
)

if TYPE_CHECKING:
    from grainery.client.grain_client import GrainClient
    from grainery.client.sync import SyncGrainClient

_STUBS: weakref.WeakKeyDictionary[grpc.aio.Channel, pb_grpc.StreamsStub] = (
    weakref.WeakKeyDictionary()
)


def _stub(channel: grpc.aio.Channel) -> pb_grpc.StreamsStub:
    """One Streams stub per channel (making one costs more than a small publish)."""
    stub = _STUBS.get(channel)
    if stub is None:
        stub = _STUBS[channel] = pb_grpc.StreamsStub(channel)
    return stub


# A subscription gives up after this many failed reconnections in a row.
MAX_RECONNECTS = 20
_RECONNECTABLE = (TransportError, SiloUnavailableError, OverloadedError)


def _event_json(event: Any) -> str:
    try:
        return json.dumps(event, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentsError(f"stream event is not JSON-serialisable: {exc}") from None


class ClientStream:
    """One stream ``(namespace, key)`` of the cluster a GrainClient is connected to."""

    def __init__(self, client: GrainClient, namespace: str, key: str) -> None:
        self._client = client
        self.namespace = namespace
        self.key = key

    def _address(self) -> str:
        router = self._client.router
        return router.next_seed() if self._client.gateway_only else router.spread()

    async def publish(self, event: Any, timeout: float | None = None) -> str:
        """Append ``event`` (a JSON value) to the stream; returns its token. Raises
        InvalidArgumentsError for a bad namespace, key or event (too large, not JSON)."""
        request = pb.PublishRequest(namespace=self.namespace, key=self.key,
                                    event_json=_event_json(event))
        client = self._client
        deadline = timeout if timeout is not None else client.default_timeout
        with client.pool.borrow(self._address()) as stubs:
            try:
                reply: pb.PublishResponse = await _stub(stubs.channel).Publish(
                    request, timeout=deadline, metadata=client.security.call_metadata()
                )
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error) from None
        return reply.token

    async def subscribe(
        self, from_token: str | None = None, reconnect: bool = True,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """Yield ``(token, event)`` for every event after ``from_token`` (None: from now on;
        ``"0"``: from the oldest retained), then for each new one, until the caller stops.
        With ``reconnect`` a lost connection is re-opened on another silo from the last
        token yielded (after MAX_RECONNECTS failures in a row the error is raised)."""
        client = self._client
        position = from_token or ""
        failures = 0
        while True:
            request = pb.SubscribeRequest(namespace=self.namespace, key=self.key,
                                          from_token=position)
            address = self._address()
            try:
                with client.pool.borrow(address) as stubs:
                    call = _stub(stubs.channel).Subscribe(
                        request, metadata=client.security.call_metadata()
                    )
                    try:
                        async for message in call:
                            failures = 0
                            position = message.token
                            yield message.token, json.loads(message.event_json)
                    finally:
                        call.cancel()
                return  # the silo ended the stream cleanly (it does not, unless stopping)
            except grpc.aio.AioRpcError as rpc_error:
                error: GrainError = from_rpc_error(rpc_error)
                if (not reconnect or not isinstance(error, _RECONNECTABLE)
                        or failures >= MAX_RECONNECTS):
                    raise error from None
            failures += 1
            await asyncio.sleep(min(0.05 * 2 ** failures, 2.0) * (0.5 + random.random()))
            await client.refresh_membership(avoid=address)


class SyncClientStream:
    """The blocking twin, from SyncGrainClient.get_stream."""

    def __init__(self, client: SyncGrainClient, stream: ClientStream) -> None:
        self._client = client
        self._stream = stream

    def publish(self, event: Any, timeout: float | None = None) -> str:
        return self._client.run(self._stream.publish(event, timeout))

    def subscribe(self, from_token: str | None = None,
                  reconnect: bool = True) -> Iterator[tuple[str, Any]]:
        events = self._stream.subscribe(from_token, reconnect)

        async def following() -> tuple[str, Any]:
            return await events.__anext__()

        try:
            while True:
                try:
                    yield self._client.run(following())
                except StopAsyncIteration:
                    return
        finally:
            self._client.run(events.aclose())
