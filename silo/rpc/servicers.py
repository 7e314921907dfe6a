"""gRPC servicers: Gateway.Invoke, Directory.Locate/Members, Management.SiloStats.

The servicers translate between the wire and the runtime and nothing more:
every GrainError becomes its documented status code plus trailing metadata
naming the error kind; anything unexpected becomes INTERNAL with no detail.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from client._proto.grainery.v1 import grainery_pb2 as pb
from client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from client.errors import GrainError, error_metadata
from client.routing import GrainId, MembershipSnapshot
from silo.catalog import Catalog
from silo.directory import RedisGrainDirectory
from silo.dispatcher import Dispatcher
from silo.membership import MembershipService
from silo.registry import GrainRegistry

log = logging.getLogger("grainery.rpc")


async def abort_with(context: grpc.aio.ServicerContext, error: GrainError) -> NoReturn:
    context.set_trailing_metadata(error_metadata(error))
    await context.abort(error.code, error.message)
    raise AssertionError("unreachable")  # abort always raises


async def abort_internal(context: grpc.aio.ServicerContext, where: str) -> NoReturn:
    log.exception("internal error in %s", where)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    raise AssertionError("unreachable")


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


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Invoke(  # noqa: N802 - gRPC method name
        self, request: pb.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeResponse:
        try:
            return await self._dispatcher.invoke(request, context.time_remaining())
        except GrainError as error:
            await abort_with(context, error)
        except Exception:  # noqa: BLE001 - never leak internals to the caller
            await abort_internal(context, "Invoke")


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
        self, catalog: Catalog, dispatcher: Dispatcher, membership: MembershipService
    ) -> None:
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._membership = membership

    async def SiloStats(  # noqa: N802
        self, request: pb.SiloStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SiloStatsResponse:
        counts = self._catalog.counts_by_type()
        return pb.SiloStatsResponse(
            silo_id=self._membership.silo_id,
            address=self._membership.address,
            state=self._membership.state,
            activations=[
                pb.TypeCount(grain_type=t, activations=n) for t, n in sorted(counts.items())
            ],
            calls_in_flight=self._dispatcher.in_flight,
            membership_version=self._membership.snapshot.version,
        )
