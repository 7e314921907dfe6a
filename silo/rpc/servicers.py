"""gRPC servicers: Gateway.Invoke, Directory.Locate/Members, Management.SiloStats.

The servicers translate between the wire and the runtime and nothing more:
every GrainError becomes its documented status code plus trailing metadata
naming the error kind; anything unexpected becomes INTERNAL with no detail but
the kind ``internal``, so a client can tell the silo's own failure from an INTERNAL
that gRPC reports when a connection breaks (no kind: a transport error).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.channels import SYSTEM_KEY_HEADER
from grainery.client.context import parse_call_metadata
from grainery.client.errors import GrainApplicationError, GrainError, error_metadata
from grainery.client.routing import ACTIVE, FENCED, LEAVING, GrainId, MembershipSnapshot
from grainery.client.tasks import spawn
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.directory import RedisGrainDirectory
from grainery.silo.cluster.membership import MembershipService
from grainery.silo.dashboard.report import SiloReporter
from grainery.silo.dispatcher import Dispatcher
from grainery.silo.durable.control import DurableControl
from grainery.silo.registry import GrainRegistry
from grainery.silo.reminders.rpc import ReminderRpcs

log = logging.getLogger("grainery.rpc")
T = TypeVar("T")


async def abort_with(context: grpc.aio.ServicerContext, error: GrainError) -> NoReturn:
    context.set_trailing_metadata(error_metadata(error))
    await context.abort(error.code, error.message)
    raise AssertionError("unreachable")  # abort always raises


async def abort_internal(context: grpc.aio.ServicerContext, where: str) -> NoReturn:
    log.exception("internal error in %s", where)
    context.set_trailing_metadata(error_metadata(GrainError("internal error")))
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    raise AssertionError("unreachable")


async def serve(
    context: grpc.aio.ServicerContext, where: str, call: Callable[[], Awaitable[T]]
) -> T:
    """Run one RPC's work, ``call()``: a GrainError becomes its status (with the error
    kind in the trailers), anything else INTERNAL without details. A callable, not a
    coroutine, so that an error raised while building the call is turned into a status
    too."""
    try:
        return await call()
    except GrainError as error:
        await abort_with(context, error)
    except Exception:  # noqa: BLE001 - never leak internals to the caller
        await abort_internal(context, where)


def snapshot_to_proto(snapshot: MembershipSnapshot) -> pb.MembersResponse:
    return pb.MembersResponse(
        version=snapshot.version,
        cluster=snapshot.cluster,
        members=[
            pb.Member(
                silo_id=m.silo_id, address=m.address, state=m.state,
                started_at=m.started_at, incarnation=m.incarnation,
            )
            for m in snapshot.members
        ],
    )


def system_key_of(metadata: object) -> str | None:
    """The system key a caller sent (silo-to-silo system calls), if any."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == SYSTEM_KEY_HEADER:
            return str(value)
    return None


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, dispatcher: Dispatcher, system_key: Callable[[], str | None]) -> None:
        """``system_key``: the cluster's system key once the silo knows it (a system call
        is refused while it does not)."""
        self._dispatcher = dispatcher
        self._system_key = system_key

    def _is_silo(self, context: grpc.aio.ServicerContext) -> bool:
        """The caller proved it is a silo of this cluster (it sent the system key)."""
        expected = self._system_key()
        sent = system_key_of(context.invocation_metadata())
        return bool(expected) and sent is not None and hmac.compare_digest(
            sent.encode(), (expected or "").encode()
        )

    async def Invoke(  # noqa: N802 - gRPC method name
        self, request: pb.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeResponse:
        try:
            # Request context (grainery-ctx-<name>), call chain (grainery-chain) and trace
            # context (traceparent, tracestate) ride in the metadata, so any gRPC client can
            # set them.
            metadata = context.invocation_metadata() or ()
            values, chain = parse_call_metadata(metadata)
            tracer = self._dispatcher.tracer
            return await self._dispatcher.invoke(
                request, context.time_remaining(), values, chain,
                system=request.system and self._is_silo(context),
                trace=None if tracer is None else tracer.extract_metadata(metadata),
            )
        except GrainError as error:
            await abort_with(context, error)
        except Exception:  # noqa: BLE001 - never leak internals to the caller
            await abort_internal(context, "Invoke")

    async def InvokeStream(  # noqa: N802
        self, requests: AsyncIterator[pb.InvokeFrame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ResultFrame]:
        """Many calls on one stream: each runs as its own task (as a unary call would), and
        results go back as soon as they are ready, batched when several are."""
        session = StreamSession(self._dispatcher)
        reader = spawn(session.read(requests), name="grainery-stream-reader")
        try:
            async for frame in session.results(reader):
                yield frame
        finally:
            reader.cancel()
            await session.cancel()


class StreamSession:
    """The calls of one InvokeStream. Invariants: every call read gets exactly one result;
    no call is read while ``MAX_READY_RESULTS`` results wait to be sent (so at most that
    many, plus the calls already running, which the dispatcher's in-flight limit bounds).

    Backpressure: while that many results wait (the caller reads them slower than the silo
    produces them), no new calls are read; gRPC flow control then slows the caller's writes,
    so a slow reader cannot grow the silo's memory."""

    MAX_RESULT_FRAME_BYTES = 1024 * 1024
    MAX_READY_RESULTS = 1024

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._ready: list[pb.StreamResult] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set whenever results were taken to be sent
        self._running: set[asyncio.Task[None]] = set()

    async def read(self, requests: AsyncIterator[pb.InvokeFrame]) -> None:
        try:
            async for frame in requests:
                for call in frame.calls:
                    task = asyncio.create_task(self._run(call))
                    self._running.add(task)
                    task.add_done_callback(self._call_done)
                while len(self._ready) >= self.MAX_READY_RESULTS:
                    self._room.clear()
                    await self._room.wait()
        except (grpc.RpcError, grpc.aio.BaseError) as exc:
            # The caller went away, or the server stopped (a silo that drains): no more calls
            # come; every call already read still gets its answer. Not a failure to log.
            log.debug("call stream ended while reading: %s", type(exc).__name__)

    @property
    def waiting_results(self) -> int:
        return len(self._ready)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()  # the last call finishing may end a half-closed stream

    async def _run(self, call: pb.StreamCall) -> None:
        result = pb.StreamResult(call_id=call.call_id)
        try:
            timeout = call.timeout if call.timeout > 0 else None
            chain = tuple(call.chain) if call.chain else ()  # tuple() of an empty one: 0.5 µs
            tracer = self._dispatcher.tracer
            trace = (tracer.extract(call.trace_context)
                     if tracer is not None and call.trace_context else None)
            result.response.CopyFrom(await self._dispatcher.invoke(
                call.request, timeout, call.context, chain, trace=trace
            ))
        except GrainError as error:
            result.status_code = error.code.value[0]
            result.status_message = error.message
            result.error_kind = error.kind
            result.retry_safe = error.retry_safe
            if isinstance(error, GrainApplicationError):
                result.error_type = error.error_type
        except Exception:  # noqa: BLE001 - never leak internals to the caller
            log.exception("internal error in InvokeStream")
            result.status_code = grpc.StatusCode.INTERNAL.value[0]
            result.status_message = "internal error"
            result.error_kind = GrainError.kind
        self._ready.append(result)
        self._wake.set()

    async def results(self, reader: asyncio.Task[None]) -> AsyncIterator[pb.ResultFrame]:
        """Frames of ready results until the caller closed its side and every call answered."""
        reader.add_done_callback(lambda _: self._wake.set())
        while True:
            if self._ready:
                yield self._take_frame()
                continue
            if reader.done() and not self._running:
                return
            await self._wake.wait()
            self._wake.clear()

    def _take_frame(self) -> pb.ResultFrame:
        size, count = 0, 0
        for result in self._ready:
            size += result.ByteSize() + 8
            if count and size > self.MAX_RESULT_FRAME_BYTES:
                break
            count += 1
        batch, self._ready = self._ready[:count], self._ready[count:]
        self._room.set()
        return pb.ResultFrame(results=batch)

    async def cancel(self) -> None:
        for task in list(self._running):
            task.cancel()


class DirectoryServicer(pb_grpc.DirectoryServicer):
    def __init__(
        self,
        registry: GrainRegistry,
        directory: RedisGrainDirectory,
        membership: MembershipService,
    ) -> None:
        self._registry = registry
        self._directory = directory
        self._membership = membership

    async def Locate(  # noqa: N802
        self, request: pb.LocateRequest, context: grpc.aio.ServicerContext
    ) -> pb.LocateResponse:
        try:
            self._registry.get(request.grain_type)
            grain = GrainId(request.grain_type, request.grain_key)
            entry = await self._directory.lookup(grain)
            if entry is not None and self._membership.is_alive(entry.incarnation):
                return pb.LocateResponse(silo_id=entry.silo_id, address=entry.address, active=True)
            owner = self._membership.ring.owner(grain)
            if owner is None:
                return pb.LocateResponse()
            return pb.LocateResponse(silo_id=owner.silo_id, address=owner.address, active=False)
        except GrainError as error:
            await abort_with(context, error)
        except Exception:  # noqa: BLE001
            await abort_internal(context, "Locate")

    async def Members(  # noqa: N802
        self, request: pb.MembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.MembersResponse:
        return snapshot_to_proto(self._membership.snapshot)


class ManagementServicer(pb_grpc.ManagementServicer):
    def __init__(
        self, catalog: Catalog, dispatcher: Dispatcher, membership: MembershipService,
        reminders: ReminderRpcs | None = None,
        durable: DurableControl | None = None,
        reporter: SiloReporter | None = None,
    ) -> None:
        """``reporter``: builds SiloReport (the dashboard's view of this silo) around the
        silo's stats, and answers InspectGrain; without one, SiloReport is the stats alone
        and InspectGrain finds nothing."""
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._membership = membership
        self._reminders = reminders
        self.reporter = reporter
        self._durable = durable  # durable agents: Journal, Signal, RunStatus, CancelRun

    def _durable_control(self) -> DurableControl:
        if self._durable is None:
            raise GrainError("durable agents are not wired on this silo")
        return self._durable

    # ----- durable agents (silo/durable/control.py) ----------------------------
    async def Journal(  # noqa: N802
        self, request: pb.JournalRequest, context: grpc.aio.ServicerContext
    ) -> pb.JournalResponse:
        return await serve(context, "Journal", lambda: self._durable_control().journal(request))

    async def Signal(  # noqa: N802
        self, request: pb.SignalRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignalResponse:
        return await serve(context, "Signal", lambda: self._durable_control().signal(
            request, context.time_remaining()))

    async def RunStatus(  # noqa: N802
        self, request: pb.RunRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunResponse:
        return await serve(context, "RunStatus", lambda: self._durable_control().status(
            request, context.time_remaining()))

    async def CancelRun(  # noqa: N802
        self, request: pb.RunRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunResponse:
        return await serve(context, "CancelRun", lambda: self._durable_control().cancel(
            request, context.time_remaining()))

    def stats(self) -> pb.SiloStatsResponse:
        counts = self._catalog.counts_by_type()
        state = self._membership.state
        if state in (ACTIVE, LEAVING) and not self._membership.serving:
            state = FENCED  # the lease lapsed; the heartbeat thread makes it official soon
        return pb.SiloStatsResponse(
            silo_id=self._membership.silo_id,
            address=self._membership.address,
            state=state,
            activations=[
                pb.TypeCount(grain_type=t, activations=n) for t, n in sorted(counts.items())
            ],
            calls_in_flight=self._dispatcher.in_flight,
            membership_version=self._membership.snapshot.version,
            tasks=len(asyncio.all_tasks()),
        )

    async def SiloStats(  # noqa: N802 - gRPC method name
        self, request: pb.SiloStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SiloStatsResponse:
        return self.stats()

    async def InspectGrain(  # noqa: N802
        self, request: pb.InspectGrainRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectGrainResponse:
        async def inspect() -> pb.InspectGrainResponse:
            if self.reporter is None:
                return pb.InspectGrainResponse()
            return self.reporter.inspect(request)

        return await serve(context, "InspectGrain", inspect)

    async def SiloReport(  # noqa: N802
        self, request: pb.SiloReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.SiloReportResponse:
        async def report() -> pb.SiloReportResponse:
            if self.reporter is None:
                return pb.SiloReportResponse(stats=self.stats())
            return self.reporter(request, self.stats())

        return await serve(context, "SiloReport", report)

    # ----- reminders (silo/reminders/rpc.py) ----------------------------------
    def _reminder_rpcs(self) -> ReminderRpcs:
        if self._reminders is None:
            raise GrainError("this silo has no reminder service")
        return self._reminders

    async def ListReminders(  # noqa: N802
        self, request: pb.ListRemindersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRemindersResponse:
        return await serve(context, "ListReminders",
                           lambda: self._reminder_rpcs().list(request))

    async def RegisterReminder(  # noqa: N802
        self, request: pb.RegisterReminderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterReminderResponse:
        return await serve(context, "RegisterReminder",
                           lambda: self._reminder_rpcs().register(request))

    async def UnregisterReminder(  # noqa: N802
        self, request: pb.UnregisterReminderRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnregisterReminderResponse:
        return await serve(context, "UnregisterReminder",
                           lambda: self._reminder_rpcs().unregister(request))
