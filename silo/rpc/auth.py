"""Bearer-token authentication for the gRPC port.

When a token is configured every call must carry ``authorization: Bearer
<token>``; the standard health service stays open so orchestrators' probes
work. The comparison is constant-time and the token is never logged.

A refused call gets a handler of the same kind (unary or streaming, each way)
as the method it asked for, so streaming methods such as server reflection are
refused with UNAUTHENTICATED like unary ones, and its request is never parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from grainery.client.channels import TOKEN_METADATA_KEY
from grainery.client.errors import ERROR_KIND_KEY, RETRY_SAFE_KEY

_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_MESSAGE = "missing or invalid bearer token"


async def _deny(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> None:
    context.set_trailing_metadata(((ERROR_KIND_KEY, "unauthenticated"), (RETRY_SAFE_KEY, "0")))
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)


async def _deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> None:
    """Refuse a client-streaming call after its first message (or 1 s): refused before the
    client's first write, grpcio clients sometimes report INTERNAL instead of the status."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(requests.__anext__(), 1.0)
    await _deny(requests, context)


# One refusing handler per call kind. No (de)serialisers: the request stays raw
# bytes and is never read, and nothing is ever sent back but the status.
_DENIED: dict[tuple[bool, bool], grpc.RpcMethodHandler] = {
    (False, False): grpc.unary_unary_rpc_method_handler(_deny),
    (False, True): grpc.unary_stream_rpc_method_handler(_deny),
    (True, False): grpc.stream_unary_rpc_method_handler(_deny_stream),
    (True, True): grpc.stream_stream_rpc_method_handler(_deny_stream),
}


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def _authorized(self, handler_call_details: grpc.HandlerCallDetails) -> bool:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_METADATA_KEY:
                presented = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(presented, self._expected):
                    return True
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(_OPEN_PREFIXES) or self._authorized(handler_call_details):
            return await continuation(handler_call_details)
        # Looking the handler up only tells its kind; nothing of it runs. An unknown
        # method is refused as unary, so an unauthenticated caller cannot probe names.
        handler = await continuation(handler_call_details)
        if handler is None:
            return _DENIED[(False, False)]
        return _DENIED[(bool(handler.request_streaming), bool(handler.response_streaming))]
