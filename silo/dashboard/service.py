"""The dashboard's parts wired to one silo: sampler, report, and (with ``--dashboard-port``)
the HTTP server.

The sampler and the report always run, whether or not this silo serves the page: the
dashboard of any other silo, and ``grainery top``, ask every member for its report.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc
import orjson
from redis.exceptions import RedisError

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.errors import GrainError
from grainery.client.routing import GrainId, MemberInfo
from grainery.silo.dashboard.http import DashboardServer, HttpError, server_ssl_context
from grainery.silo.dashboard.lookup import GrainLookupError, lookup
from grainery.silo.dashboard.overview import gather
from grainery.silo.dashboard.report import SiloReporter
from grainery.silo.dashboard.sampler import MetricsSampler
from grainery.silo.reminders.model import RUNTIME_PREFIX

if TYPE_CHECKING:
    from grainery.silo.runtime import Silo

JOURNAL_SHOWN = 20  # newest entries of a grain's journal in the lookup
JOURNAL_DATA_CHARS = 200
HISTORY_SHOWN = 120  # seconds of history the page asks each silo for
TOP_SHOWN = 10


class Dashboard:
    def __init__(self, silo: Silo) -> None:
        self._silo = silo
        self.sampler = MetricsSampler(
            silo.metrics, lambda: silo.dispatcher.in_flight, lambda: len(silo.catalog)
        )
        self.reporter = SiloReporter(silo.catalog, self.sampler)
        self.server: DashboardServer | None = None

    @property
    def url(self) -> str | None:
        if self.server is None:
            return None
        host = self.server.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
        scheme = "https" if self.server.tls is not None else "http"
        return f"{scheme}://{shown}:{self.server.port}/"

    async def start(self) -> None:
        """Serve the page if ``--dashboard-port`` is set (the sampler is the silo's task)."""
        config = self._silo.config
        if config.dashboard_port is None:
            return
        tls = (server_ssl_context(config.tls_cert, config.tls_key, config.tls_client_ca)
               if config.tls_cert and config.tls_key else None)
        self.server = DashboardServer(
            config.dashboard_host, config.dashboard_port, config.token, self.overview,
            self.lookup, tls,
        )
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    async def _fetch(self, member: MemberInfo) -> pb.SiloReportResponse:
        silo = self._silo
        request = pb.SiloReportRequest(history_seconds=HISTORY_SHOWN, top=TOP_SHOWN)
        if member.incarnation == silo.membership.incarnation:
            return self.reporter(request, silo.management.stats())
        reply: pb.SiloReportResponse = await silo.peers.get(member.address).management.SiloReport(
            request, timeout=2.0, metadata=silo.security.call_metadata()
        )
        return reply

    async def overview(self) -> dict[str, Any]:
        membership = self._silo.membership
        return await gather(membership.snapshot, membership.ring.shares(), self._fetch,
                            served_by=membership.silo_id)

    async def lookup(self, grain_type: str, key: str) -> dict[str, Any]:
        silo = self._silo
        try:
            found = await lookup(silo.registry, silo.directory, silo.storage, silo.membership,
                                 grain_type, key)
        except GrainLookupError as error:
            raise HttpError(error.status, str(error)) from None
        except GrainError as error:  # the store did not answer
            raise HttpError(503, error.message) from None
        found["activation"] = None
        if found["active"]:
            found["activation"] = await self._inspect(found["address"], grain_type, key)
        found["reminders"] = await self._reminders(grain_type, key)
        found["journal"] = await self._journal(grain_type, key)
        return found

    async def _journal(self, grain_type: str, key: str) -> list[dict[str, Any]] | str:
        """The last entries of the grain's journal (a durable agent's steps, signals and
        runs), newest first; each entry's data cut to JOURNAL_DATA_CHARS characters."""
        try:
            entries = await self._silo.journal.last(GrainId(grain_type, key), JOURNAL_SHOWN)
        except (RedisError, GrainError) as exc:
            return f"could not read the journal: {type(exc).__name__}"
        shown = []
        for entry in entries:
            data = orjson.dumps(entry.data, default=str).decode()
            if len(data) > JOURNAL_DATA_CHARS:
                data = data[:JOURNAL_DATA_CHARS] + "…"
            shown.append({"seq": entry.seq, "kind": entry.kind, "data": data,
                          "time_ms": entry.time_ms})
        return shown

    async def _reminders(self, grain_type: str, key: str) -> list[dict[str, Any]] | str:
        """The grain's reminders, the runtime's own ($...) included; a store error as text."""
        try:
            listed = await self._silo.reminders.listing(grain_type, key, include_runtime=True)
        except (RedisError, GrainError) as exc:
            return f"could not read reminders: {type(exc).__name__}"
        now = time.time()
        return [{
            **info.to_json(), "runtime": info.name.startswith(RUNTIME_PREFIX),
            "due_in_seconds": None if info.next_due is None else round(info.next_due - now, 1),
        } for info in listed]

    async def _inspect(self, address: str, grain_type: str, key: str) -> dict[str, Any]:
        """What the hosting silo says of the grain's activation (its queue, its calls)."""
        silo = self._silo
        request = pb.InspectGrainRequest(grain_type=grain_type, grain_key=key)
        try:
            if address == silo.address:
                reply = self.reporter.inspect(request)
            else:
                reply = await silo.peers.get(address).management.InspectGrain(
                    request, timeout=2.0, metadata=silo.security.call_metadata()
                )
        except GrainError as error:
            return {"error": error.message}
        except grpc.aio.AioRpcError as exc:
            return {"error": f"{exc.code().name} from {address}"}
        if not reply.active:
            return {"error": "not active there any more"}
        calls = reply.recent.calls
        return {
            "phase": reply.phase, "queued": reply.queued, "turns": reply.turns,
            "idle_seconds": round(reply.idle_seconds, 1), "workers": reply.workers,
            "recent_calls": calls, "window_seconds": round(reply.activity_window, 1),
            "mean_ms": round(1000 * reply.recent.total_seconds / calls, 3) if calls else None,
            "slowest_ms": round(1000 * reply.recent.slowest_seconds, 3) if calls else None,
        }

