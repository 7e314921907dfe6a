"""GrainClient: call grains in a Grainery cluster from Python.

The client learns the membership from any seed silo, computes each grain's
owner with the same hash ring the silos use, and calls the owner directly; a grain type
whose responses say ``stateless_worker`` is served by any silo, so its calls are spread
round-robin over the active silos instead (see client/routing.py).
Calls that provably never ran (the silo refused them before dispatch, or no
connection could be made) are retried on the new owner within the deadline;
anything else is reported, never silently repeated. A call given up at its
deadline after such retries raises a DeadlineExceededError that is itself
retry-safe (no attempt ran) and names the last underlying error (also its
``__cause__``), so the caller knows both that and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import DEFAULT_MAX_MESSAGE_BYTES, ChannelPool, ClientSecurity
from grainery.client.codec import check_size, decode_result, encode_args, encode_kwargs
from grainery.client.context import check_context, current_request_context
from grainery.client.errors import (
    DeadlineExceededError,
    GrainError,
    OverloadedError,
    PlacementUnavailableError,
    SiloUnavailableError,
    TransportError,
)
from grainery.client.filters import Filter, NamedFilter, OutgoingCall, named, run_filters
from grainery.client.grain_ref import GrainRef
from grainery.client.reminders import list_reminders
from grainery.client.routing import (
    GONE_STATES,
    GrainId,
    MemberInfo,
    MembershipSnapshot,
    Router,
)
from grainery.client.streams import ClientStream, PublishBatcher
from grainery.client.tasks import spawn
from grainery.client.tracing import CallTracer, global_tracer_provider, require_opentelemetry

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("grainery.client")

DEFAULT_TIMEOUT = 30.0
# Errors a call is retried after (on the grain's owner, within the deadline) when retry-safe.
RETRYABLE = (SiloUnavailableError, OverloadedError, TransportError, PlacementUnavailableError)
# Room left in a message for everything but the arguments (names, key, protobuf framing).
_ENVELOPE_BYTES = 1024
# With no silo answering membership requests, give up after this many retries
# (about 1 s of back-off) rather than waiting out the whole deadline.
_MAX_BLIND_RETRIES = 5


@dataclass
class RoutingStats:
    """Calls this client made, and how many the first silo had to forward (an extra hop)."""

    calls: int = 0
    forwarded: int = 0

    @property
    def direct_ratio(self) -> float:
        return 1.0 - self.forwarded / self.calls if self.calls else 1.0


def snapshot_from_proto(response: pb.MembersResponse) -> MembershipSnapshot:
    members = tuple(
        MemberInfo(m.silo_id, m.address, m.state, m.started_at, m.incarnation)
        for m in response.members
    )
    return MembershipSnapshot(version=response.version, members=members, cluster=response.cluster)


class GrainClient:
    """An async connection to a Grainery cluster.

    ``async with GrainClient("host:port") as cluster:
    await cluster.get_grain("Counter", "a").add(5)``
    """

    def __init__(
        self,
        *seeds: str | Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        security: ClientSecurity | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        refresh_interval: float = 5.0,
        gateway_only: bool = False,
        streamed: bool = True,
        filters: Sequence[Filter | NamedFilter] = (),
        tracer_provider: TracerProvider | None = None,
        trace_grain_keys: bool = False,
        trace_arguments: bool = False,
    ) -> None:
        """``tracer_provider``: trace every call with this OpenTelemetry provider (a CLIENT
        span per call, its context sent to the silo); None uses the provider the
        application installed globally (``trace.set_tracer_provider``), if any, and traces
        nothing otherwise. ``trace_grain_keys``/``trace_arguments``: also record grain keys
        and argument values on the spans (off: they can be user data)."""
        addresses = [s for item in seeds for s in ([item] if isinstance(item, str) else item)]
        if not addresses:
            raise ValueError("GrainClient needs at least one seed address (host:port)")
        self.default_timeout = timeout
        self.security = security or ClientSecurity()
        self.router = Router(addresses)
        self.pool = ChannelPool(self.security, max_message_bytes)
        self._metadata = self.security.call_metadata()
        self._refresh_interval = refresh_interval
        self._refresh_task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[bool] | None = None
        # gateway_only: send every call to the seeds and let them forward. For callers that
        # cannot reach the silos' advertised addresses (outside a compose network or a pod
        # network, behind a load balancer); costs one extra hop per call.
        self.gateway_only = gateway_only
        self.stats = RoutingStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        # streamed: calls share one multiplexed stream per silo (InvokeStream); False sends
        # each call as a unary Invoke, like clients in other languages.
        self.streamed = streamed
        # Outgoing call filters (client/filters.py), run around each call before routing;
        # None when there are none, so an unfiltered call pays nothing for them.
        self.filters = named(filters) or None
        # Tracing (client/tracing.py): None when off, so an untraced call pays one test.
        provider = tracer_provider or global_tracer_provider()
        self.tracer: CallTracer | None = None
        if provider is not None:
            require_opentelemetry("GrainClient(tracer_provider=...)")
            self.tracer = CallTracer(
                provider, grain_keys=trace_grain_keys, arguments=trace_arguments
            )
        # Concurrent stream publishes of this client share calls (client/streams.py).
        self.publisher = PublishBatcher(self)

    async def __aenter__(self) -> GrainClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Learn the membership; start following it in the background."""
        if self.gateway_only:
            return
        if not await self.refresh_membership():
            log.warning("no seed answered Directory.Members; routing to seeds until one does")
        if self._refresh_interval > 0 and self._refresh_task is None:
            self._refresh_task = spawn(self._follow_membership(), name="grainery-follow-membership")

    async def close(self) -> None:
        for task in (self._refresh_task, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresh_task = self._refreshing = None
        await self.pool.close()

    def get_grain(self, grain_type: str, key: str) -> GrainRef:
        return GrainRef(self, GrainId(grain_type, str(key)))

    async def reminders(
        self, grain_type: str, key: str, include_runtime: bool = False,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """The durable reminders of ``grain_type/key`` (client/reminders.py)."""
        grain = GrainId(grain_type, str(key))
        address = self.router.next_seed() if self.gateway_only else self.router.route(grain)
        return await list_reminders(
            self.pool, address, self._metadata, grain_type, grain.key, include_runtime,
            self.default_timeout if timeout is None else timeout,
        )
    def get_stream(self, namespace: str, key: str) -> ClientStream:
        """The stream ``(namespace, key)``: ``publish(event)``, ``subscribe(from_token)``."""
        return ClientStream(self, namespace, str(key))

    def invoke(
        self,
        grain_type: str,
        key: str,
        method: str,
        args: Sequence[Any] = (),
        timeout: float | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Run ``method(*args, **kwargs)`` on a grain and return its (JSON-decoded) result,
        through the client's outgoing filters if it has any. The call carries the values of
        the ``request_context`` blocks around it (and whatever its filters add).

        Arguments larger than the message-size bound raise TooLargeError before sending."""
        context = current_request_context()
        if self.filters is not None:
            call = OutgoingCall(
                grain_type, key, method, list(args), dict(kwargs or {}), dict(context)
            )
            return run_filters(self.filters, call, partial(
                self._send, grain_type, key, method, args, timeout, kwargs, call.context, True
            ))
        return self._send(grain_type, key, method, args, timeout, kwargs, context, False)

    async def _send(
        self,
        grain_type: str,
        key: str,
        method: str,
        args: Sequence[Any],
        timeout: float | None,
        kwargs: Mapping[str, Any] | None,
        context: Mapping[str, str],
        filtered: bool,
    ) -> Any:
        grain = GrainId(grain_type, key)
        limit = self.pool.max_message_bytes - _ENVELOPE_BYTES
        args_json = encode_args(args, limit)
        kwargs_json = encode_kwargs(kwargs, limit) if kwargs else ""
        if kwargs_json:
            check_size("arguments", len(args_json) + len(kwargs_json), limit)
        request = pb.InvokeRequest(
            grain_type=grain_type, grain_key=key, method=method, args_json=args_json,
            kwargs_json=kwargs_json,
        )
        if filtered and context:
            check_context(context)  # a filter may have added values: the same rules apply
        response = await self.invoke_request(grain, request, timeout, context)
        return decode_result(response.result_json)

    def invoke_request(
        self, grain: GrainId, request: pb.InvokeRequest, timeout: float | None,
        context: Mapping[str, str] | None = None, chain: tuple[str, ...] = (),
    ) -> Coroutine[Any, Any, pb.InvokeResponse]:
        """Send ``request`` (retrying only what provably did not run) with its request context
        and call chain, in a CLIENT span when tracing; raises GrainError. (Returns the
        coroutine, so an untraced call has no extra frame.)"""
        if self.tracer is None:
            return self._attempts(grain, request, timeout, context, chain, None)
        return self._traced(self.tracer, grain, request, timeout, context, chain)

    async def _traced(
        self, tracer: CallTracer, grain: GrainId, request: pb.InvokeRequest,
        timeout: float | None, context: Mapping[str, str] | None, chain: tuple[str, ...],
    ) -> pb.InvokeResponse:
        """The call in a CLIENT span (one span for all its attempts); its context goes to
        the silo as ``traceparent``/``tracestate``."""
        span = tracer.start_client(request)
        try:
            response = await self._attempts(
                grain, request, timeout, context, chain, tracer.inject(tracer.with_span(span))
            )
        except BaseException as error:
            tracer.end(span, error)
            raise
        span.set_attribute("server.address", response.address)
        tracer.end(span)
        return response

    async def _attempts(
        self, grain: GrainId, request: pb.InvokeRequest, timeout: float | None,
        context: Mapping[str, str] | None, chain: tuple[str, ...],
        trace: Mapping[str, str] | None,
    ) -> pb.InvokeResponse:
        loop = self._loop
        if loop is None:  # cached: on Python 3.11 get_running_loop() costs a getpid()
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.default_timeout if timeout is None else timeout)
        attempt = 0
        last_error: GrainError | None = None
        while True:
            address = self.router.next_seed() if self.gateway_only else self.router.route(grain)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _gave_up(f"{grain}.{request.method}", attempt, last_error)
            try:
                response = await self.pool.invoke(
                    address, request, remaining, self.streamed, context, chain, trace
                )
            except GrainError as error:
                if not (error.retry_safe and isinstance(error, RETRYABLE)):
                    raise
                last_error = error
                attempt += 1
                reachable = await self.recover(grain, address, attempt, deadline - loop.time())
                if not reachable and attempt >= _MAX_BLIND_RETRIES:
                    raise error from None
                continue
            self.stats.calls += 1
            if response.address != address:
                self.stats.forwarded += 1
            if response.stateless_worker:
                self.router.mark_stateless(grain.grain_type)
            else:
                self.router.learn(grain, response.address)
            if response.membership_version > self.router.snapshot.version and not self.gateway_only:
                self._refresh_soon()
            return response

    async def recover(self, grain: GrainId, address: str, attempt: int, remaining: float) -> bool:
        """After a request that failed at ``address`` (calls; durable control requests):
        forget where the grain was, back off, re-learn the cluster. Returns False when no
        silo answered at all."""
        self.router.forget(grain)
        backoff = min(0.02 * (2 ** min(attempt, 6)), 1.0) * (0.5 + random.random())
        await asyncio.sleep(max(0.0, min(backoff, remaining)))
        try:
            return await asyncio.wait_for(
                self.refresh_membership(avoid=address), max(remaining, 0.01)
            )
        except (asyncio.TimeoutError, GrainError):
            return False

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = spawn(self.refresh_membership(), name="grainery-refresh")

    async def refresh_membership(self, avoid: str | None = None) -> bool:
        """Ask the first silo that answers for the membership; False if none did."""
        candidates = self.router.addresses()
        if avoid is not None and len(candidates) > 1:
            candidates = [a for a in candidates if a != avoid] + [avoid]
        for address in candidates:
            try:
                with self.pool.borrow(address) as stubs:
                    response = await stubs.directory.Members(
                        pb.MembersRequest(), timeout=2.0, metadata=self._metadata
                    )
            except grpc.aio.AioRpcError:
                continue
            self._adopt(snapshot_from_proto(response))
            return True
        return False

    def _adopt(self, snapshot: MembershipSnapshot) -> None:
        """Route by ``snapshot`` if it is newer, and let go of connections to silos that no
        longer host grains (dead, left after a graceful leave, fenced) or left it: a
        long-lived client of a cluster whose silos restart would otherwise keep a channel,
        and its reconnect attempts, per departed address (a left silo's row stays visible
        for a while after it exited)."""
        if self.router.update(snapshot):
            live = {m.address for m in snapshot.members if m.state not in GONE_STATES}
            self.pool.retain(live | set(self.router.seeds))

    async def wait_for_members(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` silos are active (e.g. right after starting a cluster)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.router.snapshot.active) < count:
            if loop.time() >= deadline:
                raise DeadlineExceededError(
                    f"only {len(self.router.snapshot.active)} of {count} silos active "
                    f"after {timeout:.0f}s"
                )
            await asyncio.sleep(0.1)
            await self.refresh_membership()

    async def _follow_membership(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self.refresh_membership()
            except Exception:  # noqa: BLE001 - logged; the next tick tries again
                log.warning("membership refresh failed", exc_info=True)


def _gave_up(target: str, attempts: int, last_error: GrainError | None) -> DeadlineExceededError:
    """The deadline passed between attempts. Every attempt so far was refused before it ran
    (only those are retried), so the call provably did not run: say so, and say why."""
    if last_error is None:
        return DeadlineExceededError(f"deadline exceeded calling {target}")
    error = DeadlineExceededError(
        f"deadline exceeded calling {target}; the call did not run ({attempts} attempt(s) "
        f"refused, last: {last_error.kind}: {last_error.message})"
    )
    error.retry_safe = True
    error.__cause__ = last_error
    return error
