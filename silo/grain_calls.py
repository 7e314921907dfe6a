"""Grain-to-grain calls: the client SDK, short-circuited when the target is local.

``self.get_grain(...)`` in a grain returns an ordinary GrainRef bound to this
client. It routes exactly like an external client (same ring, same location
cache) but follows the silo's own membership view instead of polling, and a
call for a grain that routes to this silo skips the network entirely.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ClientSecurity
from grainery.client.grain_client import GrainClient
from grainery.client.routing import GrainId, MembershipSnapshot

LocalInvoke = Callable[[pb.InvokeRequest, float | None], Coroutine[Any, Any, pb.InvokeResponse]]


class SiloGrainClient(GrainClient):
    def __init__(
        self,
        own_address: str,
        local_invoke: LocalInvoke,
        refresh: Callable[[], Coroutine[Any, Any, MembershipSnapshot]],
        security: ClientSecurity,
        max_message_bytes: int,
    ) -> None:
        super().__init__(
            own_address, security=security, max_message_bytes=max_message_bytes,
            refresh_interval=0,
        )
        self._own_address = own_address
        self._local_invoke = local_invoke
        self._refresh = refresh

    def follow(self, snapshot: MembershipSnapshot) -> None:
        self._adopt(snapshot)

    async def refresh_membership(self, avoid: str | None = None) -> bool:
        self._adopt(await self._refresh())
        return True

    async def invoke_request(
        self, grain: GrainId, request: pb.InvokeRequest, timeout: float | None
    ) -> pb.InvokeResponse:
        if self.router.route(grain) == self._own_address:
            return await self._local_invoke(request, self.default_timeout if timeout is None
                                            else timeout)
        return await super().invoke_request(grain, request, timeout)
