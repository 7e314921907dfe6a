"""Many grain calls over one bidirectional gRPC stream per silo.

Why: in gRPC Python the fixed cost of a unary call (one HTTP/2 stream, its
headers and trailers, a server task) is most of a grain call's CPU. One
long-lived stream per peer carries every call instead: requests that queue up
while a frame is being written go out together in the next frame, and the silo
sends back results several to a frame, matched by ``call_id``.

Invariants:
- every call gets exactly one outcome: its result, its error, a deadline error,
  or, when the stream breaks, a TransportError that is retry-safe only if the
  call was never handed to gRPC;
- a frame never exceeds the message-size bound: calls are batched up to
  ``MAX_FRAME_BYTES`` and larger requests do not use the stream (the caller
  sends them unary).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping
from typing import Any

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.errors import (
    DeadlineExceededError,
    TransportError,
    build_error,
    error_from_status,
    from_rpc_error,
)
from grainery.client.tasks import spawn

MAX_FRAME_BYTES = 1024 * 1024
MAX_STREAMED_REQUEST_BYTES = 64 * 1024  # bigger requests go unary
MAX_CALLS_PER_FRAME = 512


class CallStream:
    """One multiplexed stream to one silo; reopened on the next call after it breaks."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stub = pb_grpc.GatewayStub(channel)
        self._metadata = metadata
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.InvokeResponse]] = {}
        self._outbox: list[pb.StreamCall] = []
        self._wake = asyncio.Event()
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def accepts(request: pb.InvokeRequest) -> bool:
        # A system call (silo to silo) carries the cluster's key in its metadata: unary only.
        return not request.system and request.ByteSize() <= MAX_STREAMED_REQUEST_BYTES

    async def invoke(
        self, request: pb.InvokeRequest, timeout: float,
        context: Mapping[str, str] | None = None, chain: tuple[str, ...] = (),
        trace: Mapping[str, str] | None = None,
    ) -> pb.InvokeResponse:
        """Run one call, with its request context, call chain and W3C trace context (each
        empty unless given); raises a GrainError exactly as a unary call would."""
        if self._call is None:
            self._open()
        call_id = next(self._ids)
        loop = self._loop
        future: asyncio.Future[pb.InvokeResponse] = loop.create_future()
        self._pending[call_id] = future
        stream_call = pb.StreamCall(call_id=call_id, request=request, timeout=timeout)
        if context:
            stream_call.context.update(context)
        if chain:
            stream_call.chain.extend(chain)
        if trace:
            stream_call.trace_context.update(trace)
        self._outbox.append(stream_call)
        self._wake.set()
        timer = loop.call_later(timeout, _expire, future, request)
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(call_id, None)

    def _open(self) -> None:
        self._call = self._stub.InvokeStream(metadata=self._metadata)
        self._tasks = [
            spawn(self._write_loop(self._call), name="grainery-stream-write"),
            spawn(self._read_loop(self._call), name="grainery-stream-read"),
        ]

    async def _write_loop(self, call: Any) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    frame = self._take_frame()
                    await call.write(frame)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            # The stream ended; the read loop receives its final status (e.g. UNAUTHENTICATED)
            # and fails the outstanding calls with it.
            return
        except Exception as exc:  # a bug here must not leave the stream's calls waiting
            self._broken(call, exc)
            raise  # and spawn() logs it

    def _take_frame(self) -> pb.InvokeFrame:
        """The next batch of queued calls, within the frame bounds."""
        size, count = 0, 0
        for call in self._outbox:
            size += call.ByteSize() + 8
            if count and (size > MAX_FRAME_BYTES or count >= MAX_CALLS_PER_FRAME):
                break
            count += 1
        batch, self._outbox = self._outbox[:count], self._outbox[count:]
        return pb.InvokeFrame(calls=batch)

    async def _read_loop(self, call: Any) -> None:
        try:
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    raise TransportError("the silo closed the call stream")
                for result in frame.results:
                    self._deliver(result)
        except Exception as exc:  # noqa: BLE001 - whatever ended the stream fails its calls
            self._broken(call, exc)

    def _deliver(self, result: pb.StreamResult) -> None:
        future = self._pending.get(result.call_id)
        if future is None or future.done():
            return  # the caller gave up (deadline) before the result came
        if result.status_code == 0:
            future.set_result(result.response)
        else:
            future.set_exception(error_from_status(
                result.status_code, result.status_message, result.error_kind,
                result.retry_safe, result.error_type,
            ))

    def _broken(self, call: Any, cause: BaseException) -> None:
        """Fail what is outstanding on this stream; the next call opens a new one."""
        if self._call is not call:
            return
        self._call = None
        unsent = {c.call_id for c in self._outbox}
        self._outbox = []
        error = from_rpc_error(cause) if isinstance(cause, grpc.aio.AioRpcError) else None
        for call_id, future in list(self._pending.items()):
            if future.done():
                continue
            if error is not None and not isinstance(error, TransportError):
                # The silo refused the stream itself (e.g. UNAUTHENTICATED): that error.
                failure = build_error(error.code, error.message, error.kind, error.retry_safe)
            else:
                failure = TransportError(f"call stream broke: {error.message if error else cause}")
                # Unsent calls never left this process; sent ones ran or not: unknown.
                failure.retry_safe = call_id in unsent or bool(error and error.retry_safe)
            future.set_exception(failure)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        with contextlib.suppress(Exception):
            call.cancel()

    async def close(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("client closed"))


def _expire(future: asyncio.Future[pb.InvokeResponse], request: pb.InvokeRequest) -> None:
    if not future.done():
        future.set_exception(DeadlineExceededError(
            f"deadline exceeded calling {request.grain_type}/{request.grain_key}.{request.method}"
        ))
