"""The call path inside a silo: validate, admit, locate, then run here or forward once.

Every call, from the gateway or from a grain on this silo, goes through
:meth:`Dispatcher.invoke`. Validation happens first and touches nothing, so a
bad request costs no activation and no storage access. Admission bounds the
calls in flight. The locator says where the grain lives; a call for a grain on
another silo is forwarded with ``hops + 1`` and the reply names the host so the
caller can go straight there next time.

After validation a call is one :class:`~grainery.silo.call.GrainCall` (target,
decoded arguments, absolute deadline); the wire message is not passed on. Every
hop honours that deadline: a forwarded call carries the time remaining, and a
grain-to-grain call made inside a turn never gets more than the turn's caller.
A call that runs here goes through the silo's call filters (silo/filters.py), if it has
any, just before it joins the grain's queue; a forwarded call is filtered by its owner.

A call also carries its request context and call chain (``Type/key`` of the grain
activations it passed through), both bounded (``invalid_context``). A call whose target
is already in its own chain would wait for a turn that waits for it: unless the target
lets such calls in (``reentrant``, ``allow_call_chain_reentrancy``, an ``@interleave``
method, a stateless worker), it fails at once as a ``deadlock`` naming the cycle, before
it is routed or queued anywhere; the chain travels with forwarded and grain-to-grain
calls, so this holds across silos.

Errors keep their meaning on the way out: a store failure while placing the grain
(before any grain code ran) is the retry-safe ``placement_unavailable``, and an
error a grain lets escape from its own grain-to-grain call is ``inner_call``, so the
caller never mistakes it for a verdict on its own arguments.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Coroutine, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.codec import (
    check_size,
    decode_args,
    decode_kwargs,
    encode_args,
    encode_kwargs,
    encode_result,
)
from grainery.client.context import check_chain, check_context
from grainery.client.errors import (
    DeadlineExceededError,
    DeadlockError,
    GrainApplicationError,
    GrainError,
    InnerCallError,
    InvalidArgumentsError,
    OverloadedError,
    PermissionDeniedError,
    PlacementUnavailableError,
    SiloUnavailableError,
    StorageUnavailableError,
    TransportError,
)
from grainery.client.routing import GrainId
from grainery.silo.activation import Activation, Phase, Redispatch
from grainery.silo.call import CURRENT_CALL, EMPTY, GrainCall, cycle_of
from grainery.silo.cluster.locator import GrainLocator, Placement, Remote
from grainery.silo.cluster.view import MembershipView
from grainery.silo.failures import GRAIN_FAILURES
from grainery.silo.filters import Rerouted, SiloFilters
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry, GrainType, MethodSpec
from grainery.silo.tracing import note_queued, start_dispatch, start_forward

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from grainery.client.tracing import CallTracer

log = logging.getLogger("grainery.dispatch")

MAX_HOPS = 3
MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class DispatchLimits:
    max_in_flight: int = 10_000
    max_nesting: int = 64
    max_result_bytes: int = 4 * 1024 * 1024
    max_argument_bytes: int = 4 * 1024 * 1024  # args_json + kwargs_json
    max_timeout: float = 300.0


def _expire(future: asyncio.Future[Any], activation: Activation, method: MethodSpec) -> None:
    """The call's deadline passed: answer the caller now. A queued call is then skipped;
    a running turn finishes, and its result is dropped."""
    if not future.done():
        future.set_exception(DeadlineExceededError(
            f"deadline exceeded waiting for {activation.grain_id}.{method.name}"
        ))


class PeerInvoker(Protocol):
    """What forwarding needs from the connections to other silos (the silo passes its
    ChannelPool); a Protocol so in-process tests can route to another in-process silo."""

    async def invoke(
        self, address: str, request: pb.InvokeRequest, timeout: float, streamed: bool,
        context: Mapping[str, str] | None = None, chain: tuple[str, ...] = (),
        trace: Mapping[str, str] | None = None,
    ) -> pb.InvokeResponse:
        """One call to the silo at ``address`` with its context, chain and W3C trace context;
        raises GrainError."""
        ...


class Dispatcher:
    def __init__(
        self,
        registry: GrainRegistry,
        locator: GrainLocator,
        membership: MembershipView,
        peers: PeerInvoker,
        metrics: SiloMetrics,
        limits: DispatchLimits,
        filters: SiloFilters | None = None,
        tracer: CallTracer | None = None,
    ) -> None:
        """``tracer``: trace calls (silo/tracing.py); None, tracing off, costs nothing."""
        self._registry = registry
        self.tracer = tracer
        self._locator = locator
        self._membership = membership
        self._peers = peers
        self._metrics = metrics
        self.limits = limits
        self.filters = filters if filters else None  # None: calls pay nothing for filters
        self.in_flight = 0
        self.admitting = True
        # Cached: on Python 3.11 every get_running_loop() costs a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self.idle = asyncio.Event()
        self.idle.set()
        self._hot: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._local_calls = metrics.gateway_calls.labels("local")

    def invoke(
        self, request: pb.InvokeRequest, timeout: float | None,
        context: Mapping[str, str] | None = None, chain: tuple[str, ...] = (),
        system: bool = False, trace: Context | None = None,
    ) -> Coroutine[Any, Any, pb.InvokeResponse]:
        """Run (or forward) one call; raises a GrainError on failure. ``timeout``: the
        seconds the caller will wait (None: the default), capped by ``max_timeout``;
        ``context``/``chain``: the call's request context and call chain, as received;
        ``system``: the caller is this silo's runtime or a silo that proved it knows the
        cluster's system key, so ``request.system`` (a runtime hook call) is allowed;
        ``trace``: the caller's trace context read from the wire (None: a local call, whose
        trace is the current context). Returns the coroutine: with tracing off a call has
        no extra frame."""
        tracer = self.tracer
        if tracer is None or (trace is None and tracer.idle()):
            return self._invoke(request, timeout, context, chain, system, None)
        return self._traced(tracer, request, timeout, context, chain, system, trace)

    async def _traced(
        self, tracer: CallTracer, request: pb.InvokeRequest, timeout: float | None,
        context: Mapping[str, str] | None, chain: tuple[str, ...], system: bool,
        trace: Context | None,
    ) -> pb.InvokeResponse:
        """The call inside its SERVER span (see silo/tracing.py)."""
        dispatch = start_dispatch(tracer, request, trace)
        if dispatch is None:
            return await self._invoke(request, timeout, context, chain, system, None)
        try:
            response = await self._invoke(
                request, timeout, context, chain, system, dispatch.context
            )
        except BaseException as error:
            dispatch.finish(error)
            raise
        dispatch.finish()
        return response

    async def _invoke(
        self, request: pb.InvokeRequest, timeout: float | None,
        context: Mapping[str, str] | None, chain: tuple[str, ...], system: bool,
        trace: Context | None,
    ) -> pb.InvokeResponse:
        grain_type, method, call = self._validate(request, context, chain, system)
        if trace is not None:
            call.trace = trace
        if call.chain:
            self._refuse_cycle(grain_type, method, call)
        if not self.admitting or not self._membership.serving:
            self._count(grain_type.name, method.name, "unavailable")
            raise SiloUnavailableError(
                f"silo {self._membership.silo_id} is not serving (shutting down or fenced)"
            )
        if self.in_flight >= self.limits.max_in_flight:
            self._count(grain_type.name, method.name, "overloaded")
            raise OverloadedError(
                f"silo {self._membership.silo_id} has {self.in_flight} calls in flight "
                f"(limit {self.limits.max_in_flight})"
            )
        budget = min(timeout if timeout is not None else 30.0, self.limits.max_timeout)
        call.deadline = self._loop.time() + budget
        self._enter()
        try:
            return await self._route(call, grain_type, method)
        finally:
            self._leave()

    def _enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()
        self._metrics.in_flight.set(self.in_flight)

    def _leave(self) -> None:
        self.in_flight -= 1
        self._metrics.in_flight.set(self.in_flight)
        if self.in_flight == 0:
            self.idle.set()

    def _validate(
        self, request: pb.InvokeRequest, context: Mapping[str, str] | None,
        chain: tuple[str, ...], system: bool = False,
    ) -> tuple[GrainType, MethodSpec, GrainCall]:
        try:
            grain_type = self._registry.get(request.grain_type)
            if request.system:
                if not system:
                    raise PermissionDeniedError(
                        "system calls (runtime hooks) are accepted only from the silos of "
                        "this cluster"
                    )
                method = grain_type.hook(request.method)
            else:
                method = grain_type.method(request.method)
            if len(request.grain_key.encode()) > MAX_KEY_BYTES:
                raise InvalidArgumentsError(f"grain key longer than {MAX_KEY_BYTES} bytes")
            # A grain-to-grain call on this silo never crossed gRPC's size check.
            check_size("arguments", len(request.args_json) + len(request.kwargs_json),
                       self.limits.max_argument_bytes)
            args = decode_args(request.args_json, self.limits.max_nesting)
            kwargs = (decode_kwargs(request.kwargs_json, self.limits.max_nesting)
                      if request.kwargs_json else EMPTY)
            method.check_call(len(args), kwargs)
            if context:
                check_context(context)
            if chain:
                chain = check_chain(chain)
        except GrainError as error:
            known = request.grain_type in self._registry.names()
            self._count(request.grain_type if known else "_unknown", "_invalid", error.kind)
            raise
        call = GrainCall(request.grain_type, request.grain_key, request.method, args, kwargs,
                         hops=request.hops, context=dict(context) if context else EMPTY,
                         chain=chain, system=request.system)
        return grain_type, method, call

    def _refuse_cycle(self, grain_type: GrainType, method: MethodSpec, call: GrainCall) -> None:
        """Deadlock vs let through: a call into a grain already in its chain can only run
        if the grain interleaves it (the mailbox decides how; this only decides whether)."""
        if (grain_type.reentrant or grain_type.call_chain_reentrant or method.interleave
                or method.one_way or grain_type.stateless_max_local is not None):
            return  # (a one-way call is answered once queued: nobody waits for it)
        cycle = cycle_of(call.chain, call.activation)
        if cycle is not None:
            self._count(grain_type.name, method.name, DeadlockError.kind)
            raise DeadlockError(
                f"deadlock: {cycle}: {call.target} would wait for the turn of "
                f"{call.activation} that is waiting for it ({grain_type.name} is not "
                "reentrant; allow_call_chain_reentrancy = True, reentrant = True or "
                "@interleave lets such a call in)"
            )

    def _count(self, grain_type: str, method: str, outcome: str) -> None:
        self._metrics.calls.labels(grain_type, method, outcome).inc()

    def _children(self, grain_type: str, method: str) -> tuple[Any, Any]:
        """Cached metric children for the success path (labels() costs a lock and a lookup)."""
        key = (grain_type, method)
        children = self._hot.get(key)
        if children is None:
            children = self._hot[key] = (
                self._metrics.calls.labels(grain_type, method, "ok"),
                self._metrics.call_duration.labels(grain_type, method),
            )
        return children

    async def _route(
        self, call: GrainCall, grain_type: GrainType, method: MethodSpec
    ) -> pb.InvokeResponse:
        loop = self._loop
        grain = GrainId(call.grain_type, call.key)
        deadline = call.deadline
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._count(grain_type.name, method.name, "deadline")
                raise DeadlineExceededError(f"deadline exceeded before {grain} could run")
            placement: Placement | None = self._locator.local(grain)  # hot path: no task/timer
            if placement is None and call.hops == 0:
                placement = self._locator.remote(grain)  # where it lives, if remembered
            if placement is None:
                # The activation the locator may start is shared by every caller and outlives
                # this one's deadline: its on_activate must not run as part of this call.
                token = CURRENT_CALL.set(None)
                try:
                    placement = await self._locator.resolve(grain, grain_type, call.hops, deadline)
                except asyncio.TimeoutError:
                    continue
                except GrainError as error:
                    if type(error) is StorageUnavailableError:
                        # Directory lookup/registration (or the state load with it) failed:
                        # no grain code ran, so say so; the caller may retry.
                        error = PlacementUnavailableError(
                            f"could not place {grain}: {error.message}; the call did not run"
                        )
                    self._count(grain_type.name, method.name, error.kind)
                    raise error from None
                finally:
                    CURRENT_CALL.reset(token)
            if isinstance(placement, Remote):
                try:
                    response = await self._forward(placement, call, deadline)
                except GrainError as error:
                    if error.retry_safe:  # refused there (leaving, fenced): look it up again
                        self._locator.forget(grain)
                    raise
                if response is not None:
                    if response.address != placement.address:
                        self._locator.forget(grain)  # it ran elsewhere: look it up next time
                    return response
                self._locator.forget(grain)
                continue
            try:
                return await self._run_local(placement, method, call)
            except Redispatch:
                await self._wait_gone(placement, deadline)

    async def _wait_gone(self, activation: Activation, deadline: float) -> None:
        remaining = deadline - self._loop.time()
        if remaining > 0:
            try:
                await asyncio.wait_for(activation.wait_gone(), remaining)
            except asyncio.TimeoutError:
                pass

    async def _run_local(
        self, activation: Activation, method: MethodSpec, call: GrainCall
    ) -> pb.InvokeResponse:
        if method.one_way:
            if self.filters is None:
                return self._admit_one_way(activation, method, call)
            return await self._filtered_one_way(activation, method, call)
        grain_type = activation.grain_type.name
        started = time.perf_counter()
        timer: asyncio.TimerHandle | None = None
        if self.filters is not None:  # the silo's call filters run around the queueing
            if activation.phase is not Phase.ACTIVE:
                raise Redispatch()  # before any filter saw the call
            pending: Awaitable[Any] = self.filters.run(
                call, partial(self._queue_call, activation, method, call)
            )
        else:
            if call.trace is None:
                pending = activation.call(method, call)  # raises Redispatch when going away
            else:
                queued = activation.queued
                pending = activation.call(method, call)
                note_queued(call, activation, queued)
            self._local_calls.inc()
            timer = self._loop.call_at(call.deadline, _expire, pending, activation, method)
        try:
            result = await pending
        except Rerouted:  # the grain began deactivating while the filters ran
            raise Redispatch() from None
        except GrainError as error:
            # Escaped from the grain's own grain-to-grain call: inner_call, except a deadlock,
            # which is the whole chain's (this call is part of the cycle) and stays one.
            if error.origin is not None and type(error) is not DeadlockError:
                error = InnerCallError.wrap(error)
            self._count(grain_type, method.name, error.kind)
            raise error from None
        except Exception as exc:  # noqa: BLE001 - the grain's own failure, reported to its caller
            self._count(grain_type, method.name, "application")
            GRAIN_FAILURES.report(
                grain_type, exc, f"{call.grain_type}/{call.key}.{method.name} raised "
                f"{type(exc).__name__}: {str(exc)[:1000]}",
            )
            raise GrainApplicationError(
                f"{type(exc).__name__}: {str(exc)[:1000]}", type(exc).__name__
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
        ok, duration = self._children(grain_type, method.name)
        ended = time.perf_counter()
        duration.observe(ended - started)
        activation.activity.record(ended, ended - started)  # the dashboard's top grains
        result_json = self._encode(activation, method, result)
        ok.inc()
        return pb.InvokeResponse(
            result_json=result_json,
            silo_id=self._membership.silo_id,
            address=self._membership.address,
            membership_version=self._membership.snapshot.version,
            # Tells the caller any silo serves this type: spread its calls (silo/workers.py).
            stateless_worker=activation.grain_type.stateless_max_local is not None,
        )

    async def _queue_call(
        self, activation: Activation, method: MethodSpec, call: GrainCall
    ) -> Any:
        """The innermost step of the silo's filters: queue the call on the grain, await it."""
        if self._loop.time() >= call.deadline:
            raise DeadlineExceededError(f"deadline exceeded in the call filters of {call.target}")
        try:
            future = activation.call(method, call)
        except Redispatch:  # going away: passes through every filter, back to _route
            raise Rerouted() from None
        self._local_calls.inc()
        timer = self._loop.call_at(call.deadline, _expire, future, activation, method)
        try:
            return await future
        finally:
            timer.cancel()

    # ----- one-way calls ---------------------------------------------------
    def _admit_one_way(
        self, activation: Activation, method: MethodSpec, call: GrainCall
    ) -> pb.InvokeResponse:
        """Queue a @one_way call and answer ``null`` at once (after the same admission as
        any call: a full queue raises OverloadedError, a grain going away Redispatch).

        The caller's deadline no longer applies once it is answered: the turn gets its own,
        ``max_timeout`` from now (to start, and for the calls it makes). It starts a new
        call chain: nobody waits for it, so a call it makes back to its caller is no cycle.
        """
        turn = replace(call, deadline=self._loop.time() + self.limits.max_timeout, chain=())
        future = activation.call(method, turn)
        future.add_done_callback(
            functools.partial(self._one_way_done, activation.grain_type.name, method.name, turn)
        )
        self._local_calls.inc()
        return self._null_response()

    async def _filtered_one_way(
        self, activation: Activation, method: MethodSpec, call: GrainCall
    ) -> pb.InvokeResponse:
        """A one-way call passes the silo's filters like any call (they may refuse it); the
        innermost step admits it, and the caller gets ``null`` whatever the filters return."""
        assert self.filters is not None
        if activation.phase is not Phase.ACTIVE:
            raise Redispatch()  # before any filter saw the call
        try:
            await self.filters.run(call, partial(self._queue_one_way, activation, method, call))
        except Rerouted:
            raise Redispatch() from None
        except GrainError as error:
            self._count(activation.grain_type.name, method.name, error.kind)
            raise
        return self._null_response()

    async def _queue_one_way(
        self, activation: Activation, method: MethodSpec, call: GrainCall
    ) -> None:
        if self._loop.time() >= call.deadline:
            raise DeadlineExceededError(f"deadline exceeded in the call filters of {call.target}")
        try:
            self._admit_one_way(activation, method, call)
        except Redispatch:  # going away: passes through every filter, back to _route
            raise Rerouted() from None

    def _null_response(self) -> pb.InvokeResponse:
        return pb.InvokeResponse(
            result_json="null",
            silo_id=self._membership.silo_id,
            address=self._membership.address,
            membership_version=self._membership.snapshot.version,
        )

    def _one_way_done(
        self, grain_type: str, method: str, call: GrainCall, future: asyncio.Future[Any]
    ) -> None:
        """Nobody awaits a one-way call's outcome: count it, and log a failure."""
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is None:
            self._count(grain_type, method, "ok")
            return
        kind = "application"
        if isinstance(error, GrainError):
            kind = InnerCallError.kind if error.origin is not None else error.kind
        self._count(grain_type, method, kind)
        self._metrics.one_way_failures.labels(grain_type, method).inc()
        GRAIN_FAILURES.report(grain_type, error, f"one-way call {call.target} failed after it "
                              f"was answered: {type(error).__name__}: {str(error)[:1000]}")

    def _encode(self, activation: Activation, method: MethodSpec, result: Any) -> str:
        try:
            result_json = encode_result(result)
        except TypeError as exc:
            self._count(activation.grain_type.name, method.name, "application")
            raise GrainApplicationError(
                f"TypeError: result of {activation.grain_id}.{method.name} is not "
                f"JSON-serialisable: {exc}", "TypeError",
            ) from None
        if len(result_json) > self.limits.max_result_bytes:
            self._count(activation.grain_type.name, method.name, "application")
            raise GrainApplicationError(
                f"ResultTooLarge: result of {activation.grain_id}.{method.name} is "
                f"{len(result_json)} bytes (limit {self.limits.max_result_bytes})",
                "ResultTooLarge",
            )
        return result_json

    async def _forward(
        self, remote: Remote, call: GrainCall, deadline: float
    ) -> pb.InvokeResponse | None:
        """Send the call to the silo that owns the grain, with the time it has left; None
        means 'resolve again'."""
        if call.hops >= MAX_HOPS:
            raise SiloUnavailableError(
                f"{call.grain_type}/{call.key} is moving between silos; retry"
            )
        remaining = deadline - self._loop.time()
        forwarded = pb.InvokeRequest(
            grain_type=call.grain_type, grain_key=call.key, method=call.method,
            args_json=encode_args(call.args), kwargs_json=encode_kwargs(call.kwargs),
            hops=call.hops + 1, system=call.system,
        )
        self._metrics.gateway_calls.labels("forwarded").inc()
        span, trace = (None, None) if self.tracer is None else start_forward(
            self.tracer, call, remote.address, remote.silo_id
        )
        try:
            response = await self._peers.invoke(
                remote.address, forwarded, max(remaining, 0.001), streamed=True,
                context=call.context, chain=call.chain, trace=trace,
            )
        except BaseException as failure:
            if span is not None and self.tracer is not None:
                self.tracer.end(span, failure)
            if not isinstance(failure, GrainError):
                raise
            error = failure
        else:
            if span is not None and self.tracer is not None:
                self.tracer.end(span)
            return response
        if isinstance(error, TransportError) and error.retry_safe:
            # The owner is unreachable: re-learn the membership, then resolve again.
            log.info("silo %s unreachable while forwarding; refreshing membership", remote.silo_id)
            await self._membership.refresh()
            await asyncio.sleep(min(0.1, max(0.0, deadline - self._loop.time())))
            return None
        raise error
