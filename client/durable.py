"""Client side of durable agents: read a grain's journal, signal its run, ask its status or
result, cancel it (``GrainRef.journal/signal/run_status/run_result/cancel``).

Each is one Management RPC to a silo (the one the router names for the grain: it forwards
to the grain's activation if needed); a silo that is unreachable or leaving is retried on
another after the membership is re-learned, like a call. Reads (journal, status) and
signals are also resent after a transport failure, when the first attempt may have reached
the grain: a read changes nothing, and a signal carries an id the grain records it under
once (a silo killed between recording a signal and answering is the case this covers).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import orjson

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.errors import (
    DeadlineExceededError,
    GrainError,
    OverloadedError,
    PlacementUnavailableError,
    SiloUnavailableError,
    TransportError,
    from_rpc_error,
)

if TYPE_CHECKING:
    from grainery.client.channels import SiloStubs
    from grainery.client.grain_client import GrainClient
    from grainery.client.routing import GrainId

T = TypeVar("T")

# Refusals that prove the request did not run (retry_safe), as GrainClient retries them.
RETRYABLE = (SiloUnavailableError, OverloadedError, TransportError, PlacementUnavailableError)


class RunFailedError(GrainError):
    """``run_result``: the run ended without a result (failed, cancelled or parked);
    ``status`` is the run's status (as ``run_status`` returns it)."""

    kind = "run_failed"

    def __init__(self, status: dict[str, Any]) -> None:
        error = status.get("error") or {}
        super().__init__(
            f"run {status.get('run')} ({status.get('method')}) {status.get('status')}: "
            f"{error.get('type', '')}: {error.get('message', '')}"
        )
        self.status = status


async def _control(
    client: GrainClient, grain: GrainId, timeout: float | None,
    send: Callable[[SiloStubs, float, Any], Awaitable[T]], idempotent: bool = False,
) -> T:
    """Send until answered; retried: what provably did not run, and (``idempotent``) any
    transport failure, until the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (client.default_timeout if timeout is None else timeout)
    attempt = 0
    while True:
        address = client.router.next_seed() if client.gateway_only else client.router.route(grain)
        try:
            with client.pool.borrow(address) as stubs:
                return await send(stubs, max(0.01, deadline - loop.time()),
                                  client.security.call_metadata())
        except grpc.aio.AioRpcError as rpc_error:
            error = from_rpc_error(rpc_error)
            attempt += 1
            resend = isinstance(error, RETRYABLE) and (
                error.retry_safe or (idempotent and isinstance(error, TransportError)))
            if not resend or loop.time() >= deadline:
                raise error from None
            await client.recover(grain, address, attempt, deadline - loop.time())


async def journal(client: GrainClient, grain: GrainId, after: int = 0, limit: int = 100,
                  timeout: float | None = None) -> list[dict[str, Any]]:
    request = pb.JournalRequest(grain_type=grain.grain_type, grain_key=grain.key,
                                after=after, limit=limit)

    async def send(stubs: SiloStubs, remaining: float, metadata: Any) -> pb.JournalResponse:
        reply: pb.JournalResponse = await stubs.management.Journal(
            request, timeout=remaining, metadata=metadata)
        return reply

    response = await _control(client, grain, timeout, send, idempotent=True)
    return [{"seq": e.seq, "kind": e.kind, "data": orjson.loads(e.data_json) if e.data_json
             else None, "time_ms": e.time_ms} for e in response.entries]


async def signal(client: GrainClient, grain: GrainId, name: str, payload: Any = None,
                 timeout: float | None = None, signal_id: str | None = None) -> int:
    """Send a signal; the grain records it once under ``signal_id`` (a fresh uuid4 if
    None), however many times a transport failure makes this resend it."""
    request = pb.SignalRequest(grain_type=grain.grain_type, grain_key=grain.key, name=name,
                               payload_json=orjson.dumps(payload).decode(),
                               signal_id=uuid.uuid4().hex if signal_id is None else signal_id)

    async def send(stubs: SiloStubs, remaining: float, metadata: Any) -> pb.SignalResponse:
        reply: pb.SignalResponse = await stubs.management.Signal(
            request, timeout=remaining, metadata=metadata)
        return reply

    return int((await _control(client, grain, timeout, send, idempotent=True)).seq)


async def run_status(client: GrainClient, grain: GrainId, run: int = 0, wait: float = 0.0,
                     timeout: float | None = None, cancel: bool = False,
                     reason: str = "") -> dict[str, Any]:
    request = pb.RunRequest(grain_type=grain.grain_type, grain_key=grain.key, run=run,
                            wait=wait, reason=reason)
    budget = (client.default_timeout if timeout is None else timeout) + wait

    async def send(stubs: SiloStubs, remaining: float, metadata: Any) -> pb.RunResponse:
        rpc = stubs.management.CancelRun if cancel else stubs.management.RunStatus
        reply: pb.RunResponse = await rpc(request, timeout=remaining, metadata=metadata)
        return reply

    response = await _control(client, grain, budget, send, idempotent=not cancel)
    status: dict[str, Any] = orjson.loads(response.status_json)
    return status


async def run_result(client: GrainClient, grain: GrainId, run: int = 0,
                     timeout: float = 30.0) -> Any:
    """Wait (up to ``timeout`` s) for the run to end; its result, or RunFailedError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        status = await run_status(client, grain, run, wait=max(0.0, min(left, 60.0)))
        if status.get("status") == "completed":
            return status.get("result")
        if status.get("status") in ("failed", "cancelled", "parked", "none", "unknown"):
            raise RunFailedError(status)
        if loop.time() >= deadline:
            raise DeadlineExceededError(
                f"run {status.get('run')} of {grain} still {status.get('status')} "
                f"after {timeout}s"
            )
