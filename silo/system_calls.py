"""System calls: the runtime calling a grain's hook (silo/hooks.py), wherever it lives.

The silo that serves a reminder or a stream is not always the silo where the grain is
active: a system call goes through the dispatcher like any call (placement, activation,
forwarding, the grain's turn order, its deadline), marked ``system`` so the target's hook
table is used instead of its callable methods. A forwarded system call carries the
cluster's system key (silo/cluster/system_key.py); the receiving silo checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.codec import decode_result, encode_args


class SystemInvoke(Protocol):
    async def invoke(
        self, request: pb.InvokeRequest, timeout: float | None, context: Any = None,
        chain: tuple[str, ...] = (), system: bool = False,
    ) -> pb.InvokeResponse:
        ...


class SystemCalls:
    """Calls a grain's hook through this silo's dispatcher."""

    def __init__(self, dispatcher: SystemInvoke) -> None:
        self._dispatcher = dispatcher

    async def call(
        self, grain_type: str, key: str, hook: str, args: Sequence[Any], timeout: float,
    ) -> Any:
        """Run ``hook(*args)`` as a turn of the grain ``grain_type/key`` (activating it where
        the ring and the directory say); returns its result, raises GrainError."""
        request = pb.InvokeRequest(
            grain_type=grain_type, grain_key=key, method=hook, args_json=encode_args(args),
            system=True,
        )
        response = await self._dispatcher.invoke(request, timeout, None, (), system=True)
        return decode_result(response.result_json)
