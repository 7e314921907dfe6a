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
from grainery.client.tasks import spawn

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


# Bounds of a stream's names and events: the silo enforces them (silo/streams/names.py uses
# these), and the client checks them before sending, so a bad event fails alone.
MAX_NAMESPACE_CHARS = 128
MAX_KEY_CHARS = 512
MAX_EVENT_BYTES = 64 * 1024
MAX_PUBLISH_BATCH = 1000  # events per PublishBatch call

# A subscription gives up after this many failed reconnections in a row.
MAX_RECONNECTS = 20
_RECONNECTABLE = (TransportError, SiloUnavailableError, OverloadedError)


def check_stream_names(namespace: object, key: object) -> None:
    """InvalidArgumentsError unless both are non-empty strings within the bounds."""
    for what, value, limit in (("namespace", namespace, MAX_NAMESPACE_CHARS),
                               ("key", key, MAX_KEY_CHARS)):
        if not isinstance(value, str):
            raise InvalidArgumentsError(f"a stream {what} is a string, not {type(value).__name__}")
        if not value:
            raise InvalidArgumentsError(f"a stream {what} must not be empty")
        if len(value) > limit:
            raise InvalidArgumentsError(
                f"stream {what} too long: {len(value)} characters (at most {limit})"
            )


def check_event_size(event_json: str) -> str:
    """``event_json`` if it is within MAX_EVENT_BYTES."""
    size = len(event_json.encode())
    if size > MAX_EVENT_BYTES:
        raise InvalidArgumentsError(
            f"stream event too large: {size} bytes of JSON (at most {MAX_EVENT_BYTES})"
        )
    return event_json


def check_event_json(event_json: str) -> str:
    """``event_json`` if it is one JSON value within MAX_EVENT_BYTES."""
    check_event_size(event_json)
    if not event_json.strip():
        raise InvalidArgumentsError("a stream event must be a JSON value, got nothing")
    try:
        json.loads(event_json)
    except ValueError as exc:
        raise InvalidArgumentsError(f"stream event is not valid JSON: {exc}") from None
    return event_json


def event_to_json(event: Any) -> str:
    try:
        return json.dumps(event, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentsError(f"stream event is not JSON-serialisable: {exc}") from None


class PublishBatcher:
    """Coalesces a client's concurrent publishes into PublishBatch calls.

    Why: one unary call per event caps a Python client at a few thousand publishes a second.
    While a batch is in flight, new publishes queue; the next batch takes them all (up to
    MAX_PUBLISH_BATCH), so a lone publish goes out at once and a busy client sends few
    large calls, with no timer adding latency. Publishes from one caller that awaits each
    keep their order (each one is sent after the previous one returned). Events are checked
    before they queue, so one bad event never fails its neighbours' batch.
    """

    def __init__(self, client: GrainClient) -> None:
        self._client = client
        self._queue: list[tuple[pb.PublishRequest, asyncio.Future[str]]] = []
        self._sending = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def publish(self, request: pb.PublishRequest, timeout: float | None) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if not self._sending:
            self._sending = True
            spawn(self._drain(), name="grainery-publish", owner=self._tasks)
        if timeout is None:
            return await future
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:MAX_PUBLISH_BATCH]
                del self._queue[:MAX_PUBLISH_BATCH]
                try:
                    tokens = await self._send([request for request, _ in batch])
                except BaseException as error:  # every caller of the batch gets it
                    failure = error if isinstance(error, Exception) else GrainError(
                        "publishing was interrupted"
                    )
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    if not isinstance(error, Exception):
                        raise
                    continue
                for (_, future), token in zip(batch, tokens, strict=True):
                    if not future.done():
                        future.set_result(token)
        finally:
            self._sending = False

    async def _send(self, requests: list[pb.PublishRequest]) -> list[str]:
        """One call; retried on another silo only when it provably never ran."""
        client = self._client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + client.default_timeout
        while True:
            router = client.router
            address = router.next_seed() if client.gateway_only else router.spread()
            try:
                with client.pool.borrow(address) as stubs:
                    stub = _stub(stubs.channel)
                    metadata = client.security.call_metadata()
                    remaining = max(0.01, deadline - loop.time())
                    if len(requests) == 1:
                        reply = await stub.Publish(requests[0], timeout=remaining,
                                                   metadata=metadata)
                        return [reply.token]
                    batch = await stub.PublishBatch(
                        pb.PublishBatchRequest(events=requests), timeout=remaining,
                        metadata=metadata,
                    )
                    return list(batch.tokens)
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if not (error.retry_safe and isinstance(error, _RECONNECTABLE)) \
                        or loop.time() >= deadline:
                    raise error from None
            await asyncio.sleep(0.05 * (0.5 + random.random()))
            await client.refresh_membership(avoid=address)


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
        InvalidArgumentsError for a bad namespace, key or event (too large, not JSON).
        Concurrent publishes of one client travel together (PublishBatch)."""
        check_stream_names(self.namespace, self.key)
        # json.dumps (allow_nan=False) made it: JSON by construction, only its size to check.
        request = pb.PublishRequest(namespace=self.namespace, key=self.key,
                                    event_json=check_event_size(event_to_json(event)))
        return await self._client.publisher.publish(request, timeout)

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
            # The silo names where it starts: resuming from there loses nothing, even when
            # the connection breaks before the first event.
            request = pb.SubscribeRequest(namespace=self.namespace, key=self.key,
                                          from_token=position, announce_start=True)
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
                            if message.event_json:  # empty: the start marker
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
