"""``grainery.v1.Streams``: Publish and the server-streaming Subscribe, for any language.

Any silo serves any stream (the events are in the store). A Subscribe holds one blocking
read on a pool of its own, at most MAX_SUBSCRIPTIONS per silo (more are refused with
RESOURCE_EXHAUSTED, retry-safe): a slow reader cannot grow the silo's memory, because the
next batch is read from the store only after gRPC took the previous one (flow control).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.errors import (
    GrainError,
    InvalidArgumentsError,
    OverloadedError,
    SiloUnavailableError,
    StorageUnavailableError,
)
from grainery.client.streams import MAX_PUBLISH_BATCH
from grainery.silo.rpc.servicers import abort_internal, abort_with
from grainery.silo.streams.names import check_event_json, check_stream, check_token
from grainery.silo.streams.service import StreamService, _side_connection
from grainery.silo.streams.store import decode_entries

log = logging.getLogger("grainery.streams")

MAX_SUBSCRIPTIONS = 256
READ_BATCH = 64
READ_BLOCK_MS = 500  # also how soon a stopping silo ends its subscriptions


class StreamsServicer(pb_grpc.StreamsServicer):
    def __init__(self, service: StreamService, max_subscriptions: int = MAX_SUBSCRIPTIONS) -> None:
        self._service = service
        self._max = max_subscriptions
        self._open = 0
        self._reader: aioredis.Redis = _side_connection(service.store.redis, max_subscriptions)
        self._closing = False
        self._none_open = asyncio.Event()  # set while no Subscribe is running
        self._none_open.set()

    def closing(self) -> None:
        """The silo is stopping: end every subscription (UNAVAILABLE, so clients resume
        from their last token on another silo) within READ_BLOCK_MS."""
        self._closing = True

    async def close(self) -> None:
        """End the subscriptions, then close their store connections (closing a connection
        that a blocking read still uses would wait for the read)."""
        self._closing = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._none_open.wait(), READ_BLOCK_MS / 1000 + 0.5)
        await self._reader.aclose()

    async def Publish(  # noqa: N802 - gRPC method name
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishResponse:
        try:
            stream = check_stream(request.namespace, request.key)
            token = await self._service.publish(stream, check_event_json(request.event_json))
            return pb.PublishResponse(token=token)
        except GrainError as error:
            await abort_with(context, error)
        except RedisError as exc:
            await abort_with(context, StorageUnavailableError(f"stream store unavailable: {exc}"))
        except Exception:  # noqa: BLE001 - never leak internals to the caller
            await abort_internal(context, "Streams.Publish")

    async def PublishBatch(  # noqa: N802
        self, request: pb.PublishBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishBatchResponse:
        try:
            if len(request.events) > MAX_PUBLISH_BATCH:
                raise InvalidArgumentsError(f"{len(request.events)} events in one PublishBatch "
                                            f"(at most {MAX_PUBLISH_BATCH})")
            events = []
            for index, event in enumerate(request.events):
                try:
                    events.append((check_stream(event.namespace, event.key),
                                   check_event_json(event.event_json)))
                except InvalidArgumentsError as error:
                    raise InvalidArgumentsError(f"event {index}: {error.message}") from None
            tokens = await self._service.publish_many(events) if events else []
            return pb.PublishBatchResponse(tokens=tokens)
        except GrainError as error:
            await abort_with(context, error)
        except RedisError as exc:
            await abort_with(context, StorageUnavailableError(f"stream store unavailable: {exc}"))
        except Exception:  # noqa: BLE001
            await abort_internal(context, "Streams.PublishBatch")

    async def Subscribe(  # noqa: N802
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEvent]:
        try:
            stream = check_stream(request.namespace, request.key)
            start = check_token(request.from_token)
            if self._open >= self._max:
                raise OverloadedError(
                    f"too many stream subscriptions on this silo (at most {self._max}); "
                    f"try another silo or later"
                )
        except GrainError as error:
            await abort_with(context, error)
        self._open += 1
        self._none_open.clear()
        self._service.metrics.stream_client_subscriptions.set(self._open)
        try:
            store = self._service.store
            cursor = "0-0" if start == "0" else start or await store.last_token(stream)
            if request.announce_start:
                yield pb.StreamEvent(token=cursor, event_json="")
            key = store.keys.events(stream)
            while not self._closing:
                replies: Any = await self._reader.xread({key: cursor}, count=READ_BATCH,
                                                        block=READ_BLOCK_MS)
                for _, raw in replies or []:
                    for token, event_json in decode_entries(raw):
                        cursor = token
                        yield pb.StreamEvent(token=token, event_json=event_json)
        except asyncio.CancelledError:
            raise
        except RedisError as exc:
            await abort_with(context, StorageUnavailableError(f"stream store unavailable: {exc}"))
        except Exception:  # noqa: BLE001
            await abort_internal(context, "Streams.Subscribe")
        finally:
            self._open -= 1
            self._service.metrics.stream_client_subscriptions.set(self._open)
            if self._open == 0:
                self._none_open.set()
        await abort_with(context, SiloUnavailableError(
            "this silo is stopping: subscribe again from the last token on another silo"
        ))
