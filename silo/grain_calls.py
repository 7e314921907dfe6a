"""Grain-to-grain calls: the client SDK, short-circuited when the target is local.

``self.get_grain(...)`` in a grain returns an ordinary GrainRef bound to this
client. It routes exactly like an external client (same ring, same location
cache) but follows the silo's own membership view instead of polling, and a
call for a grain that routes to this silo skips the network entirely.

Three things differ from an external client, all because the call is made on
behalf of a running call: it never waits longer than that call has left
(``min(timeout, remaining)``, on every hop: local, forwarded, call stream); it
carries that call's request context (plus whatever ``request_context`` the grain
set around it) and chain (the caller's chain plus the caller), which is how a
silo tells a call cycle from a wait; and an error it raises is marked with the
inner call's target (``GrainError.origin``) so that, if the grain lets it escape,
the dispatcher reports it as ``inner_call``.

When the silo traces (silo/tracing.py), each call is a CLIENT span, child of the calling
turn's span, whose context travels with the call (the local short-circuit included); a
call from a sampled-out turn passes that decision on without a span of its own.

A call to a stateless worker type this silo hosts (``local_workers``) always runs here:
any silo serves a worker, so a hop would only add latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ClientSecurity
from grainery.client.context import EMPTY, cleared_request_context
from grainery.client.errors import DeadlineExceededError, GrainError, build_error
from grainery.client.grain_client import RETRYABLE, GrainClient
from grainery.client.routing import GrainId, MembershipSnapshot
from grainery.client.tracing import CallTracer
from grainery.silo.call import current_call, outgoing_chain

LocalInvoke = Callable[
    [pb.InvokeRequest, float | None, Mapping[str, str], tuple[str, ...]],
    Coroutine[Any, Any, pb.InvokeResponse],
]


def inner_error(error: GrainError, target: str) -> GrainError:
    """A copy of ``error`` marked as raised by the grain-to-grain call ``target``; the copy
    keeps the class, so grain code can still catch, e.g., DeadlineExceededError."""
    marked = build_error(
        error.code, error.message, error.kind, error.retry_safe,
        getattr(error, "error_type", ""),
    )
    if type(marked) is not type(error):  # an error class the table cannot rebuild
        marked = error
    marked.origin = target
    return marked


class SiloGrainClient(GrainClient):
    def __init__(
        self,
        own_address: str,
        local_invoke: LocalInvoke,
        refresh: Callable[[], Coroutine[Any, Any, MembershipSnapshot]],
        security: ClientSecurity,
        max_message_bytes: int,
        local_workers: Iterable[str] = (),
        tracer: CallTracer | None = None,
    ) -> None:
        super().__init__(
            own_address, security=security, max_message_bytes=max_message_bytes,
            refresh_interval=0,
        )
        self.tracer = tracer  # the silo's, never an application's global provider
        self._own_address = own_address
        self._local_invoke = local_invoke
        self._refresh = refresh
        self._local_workers = frozenset(local_workers)

    def follow(self, snapshot: MembershipSnapshot) -> None:
        self._adopt(snapshot)

    async def refresh_membership(self, avoid: str | None = None) -> bool:
        self._adopt(await self._refresh())
        return True

    async def invoke(
        self,
        grain_type: str,
        key: str,
        method: str,
        args: Sequence[Any] = (),
        timeout: float | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """As GrainClient.invoke; every GrainError it raises (including refusals before
        sending, e.g. arguments too large) is marked as the inner call's."""
        try:
            return await super().invoke(grain_type, key, method, args, timeout, kwargs)
        except GrainError as error:
            if error.origin is not None:
                raise
            raise inner_error(error, f"{grain_type}/{key}.{method}") from None

    async def invoke_request(
        self, grain: GrainId, request: pb.InvokeRequest, timeout: float | None,
        context: Mapping[str, str] | None = None, chain: tuple[str, ...] = (),
    ) -> pb.InvokeResponse:
        """``context``: what ``request_context`` blocks in the grain set; it is laid over
        the running call's context. The chain is always the running call's plus the caller
        (``chain`` is ignored: grain code cannot forge it)."""
        target = f"{grain}.{request.method}"
        budget = self.default_timeout if timeout is None else timeout
        caller = current_call()
        values: Mapping[str, str] = context or EMPTY
        chain = ()
        if caller is not None:
            remaining = caller.remaining(asyncio.get_running_loop())
            if remaining <= 0:
                raise inner_error(DeadlineExceededError(
                    f"deadline of {caller.target} passed before calling {target}"
                ), target)
            budget = min(budget, remaining)
            if caller.context:
                values = {**caller.context, **values} if values else caller.context
            chain = outgoing_chain(caller)
        tracer = self.tracer
        if tracer is not None and (tracer.roots or tracer.has_parent(None)):
            return await self._traced_grain_call(tracer, grain, request, budget, values, chain)
        return await self._route_call(grain, request, budget, values, chain, None)

    async def _traced_grain_call(
        self, tracer: CallTracer, grain: GrainId, request: pb.InvokeRequest, budget: float,
        values: Mapping[str, str], chain: tuple[str, ...],
    ) -> pb.InvokeResponse:
        """The call as a CLIENT span of the calling turn (current while a local call runs,
        so the target's dispatch is its child)."""
        parent = tracer.current()
        if tracer.has_parent(parent) and not tracer.sampled(parent):
            return await self._route_call(
                grain, request, budget, values, chain, tracer.inject(parent)
            )
        span = tracer.start_client(request, parent)
        context = tracer.with_span(span, parent)
        token = tracer.attach(context)
        try:
            response = await self._route_call(
                grain, request, budget, values, chain, tracer.inject(context)
            )
        except BaseException as error:
            tracer.end(span, error)
            raise
        finally:
            tracer.detach(token)
        span.set_attribute("server.address", response.address)
        tracer.end(span)
        return response

    async def _route_call(
        self, grain: GrainId, request: pb.InvokeRequest, budget: float,
        values: Mapping[str, str], chain: tuple[str, ...], trace: Mapping[str, str] | None,
    ) -> pb.InvokeResponse:
        """Here (no network) if the grain routes to this silo, else like any client call."""
        local = grain.grain_type in self._local_workers
        if local or self.router.route(grain) == self._own_address:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                # The target's mailbox task may start here: it must not inherit this grain's
                # request_context values (its turns get each call's own context instead).
                with cleared_request_context():
                    return await self._local_invoke(request, budget, values, chain)
            except GrainError as error:
                if local or not (error.retry_safe and isinstance(error, RETRYABLE)):
                    raise
                # Refused here before it ran (this silo began to leave after the turn
                # started, say): retried like any refused call, on the owner the
                # re-learned membership names, instead of failing the calling turn.
                budget -= loop.time() - started
        return await self._attempts(grain, request, budget, values, chain, trace)
