"""Bearer-token authentication for the gRPC port.

When a token is configured every call must carry ``authorization: Bearer
<token>``; the standard health service stays open so orchestrators' probes
work. The comparison is constant-time and the token is never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from client.channels import TOKEN_METADATA_KEY
from client.errors import ERROR_KIND_KEY, RETRY_SAFE_KEY

_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _deny(request: Any, context: grpc.aio.ServicerContext) -> Awaitable[None]:
    async def deny() -> None:
        context.set_trailing_metadata(((ERROR_KIND_KEY, "unauthenticated"), (RETRY_SAFE_KEY, "0")))
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    return deny()


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._denied = grpc.unary_unary_rpc_method_handler(_deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_METADATA_KEY:
                presented = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(presented, self._expected):
                    return await continuation(handler_call_details)
        return self._denied
