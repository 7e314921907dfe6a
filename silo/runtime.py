"""The silo: one composition root that wires every component and orders start and stop.

Start: store -> gRPC port bound -> membership joined (its lease kept by a
thread of its own) -> SERVING.
Health follows the lease: a silo that fences itself reports NOT_SERVING until
it has rejoined as a new incarnation.
Stop (SIGTERM): NOT_SERVING and leave the placement ring -> refuse new calls ->
deactivate idle grains at once (so one slow call does not keep every grain of a
leaving silo unreachable) -> finish calls in flight (bounded), deactivating
grains as they become idle -> deactivate the rest -> leave the membership ->
close. Every long-lived piece has an explicit start/stop here; background tasks
are tracked and cancelled on stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2

from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.filters import Filter, NamedFilter
from grainery.client.grain_ref import GrainRef
from grainery.client.routing import ACTIVE, GONE_STATES, GrainId, MembershipSnapshot
from grainery.client.tasks import spawn
from grainery.silo.blocking import BlockingPool
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.directory import RedisGrainDirectory
from grainery.silo.cluster.locator import GrainLocator
from grainery.silo.cluster.membership import MembershipService
from grainery.silo.cluster.sweeper import DirectorySweeper
from grainery.silo.cluster.system_key import cluster_system_key
from grainery.silo.config import SiloConfig
from grainery.silo.dashboard.service import Dashboard
from grainery.silo.dispatcher import Dispatcher, DispatchLimits
from grainery.silo.durable.control import DurableControl
from grainery.silo.filters import SiloFilters, load_filters
from grainery.silo.grain_calls import SiloGrainClient
from grainery.silo.journal.store import RedisJournalStore
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry
from grainery.silo.reminders.registry import Reminders
from grainery.silo.reminders.rpc import ReminderRpcs
from grainery.silo.reminders.service import ReminderService
from grainery.silo.reminders.store import ReminderStore
from grainery.silo.rpc.server import GRAINERY_SERVICES, add_services, create_server
from grainery.silo.rpc.servicers import DirectoryServicer, GatewayServicer, ManagementServicer
from grainery.silo.storage.embedded import EmbeddedStore, running_store_url
from grainery.silo.storage.keys import KeySpace
from grainery.silo.storage.pool import StorePool
from grainery.silo.storage.redis_state import RedisGrainStorage
from grainery.silo.streams.grain_api import register_service, unregister_service
from grainery.silo.streams.service import StreamService, StreamSettings
from grainery.silo.streams.servicer import StreamsServicer
from grainery.silo.system_calls import SystemCalls
from grainery.silo.tracing import SiloTracing, check_available
from grainery.silo.tracing import configure as configure_tracing
from grainery.silo.watchdog import LoopWatchdog
from grainery.silo.workers import worker_types

log = logging.getLogger("grainery.silo")

REBALANCE_PER_SECOND = 500
DRAIN_POLL = 0.25  # seconds between looks for grains that became idle during a drain


def announce(message: str) -> None:
    """The few lines scripts and tests wait for, on stdout."""
    print(f"grainery: {message}", flush=True)


class Silo:
    def __init__(
        self,
        config: SiloConfig,
        registry: GrainRegistry | None = None,
        filters: Sequence[Filter | NamedFilter] = (),
    ) -> None:
        """``filters``: call filters (``async def f(call, proceed)``) run around every call
        that runs on this silo, outermost first, before those named by ``--filter``."""
        self.config = config
        self.registry = registry or GrainRegistry()
        self._given_filters = tuple(filters)
        self.metrics = SiloMetrics()
        self.store: EmbeddedStore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rebalancing: asyncio.Task[int] | None = None
        self.watchdog = LoopWatchdog()
        self.blocking = BlockingPool()
        self.tracing: SiloTracing | None = None

    # ----- start ----------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        # First: a bad --filter is a one-line start-up error before anything is started.
        self.filters = SiloFilters(load_filters(config.filter, self._given_filters))
        check_available(config.tracing())  # --otlp-endpoint without grainery[tracing]
        if not self.registry.names():
            self.registry.load_modules(config.grains)
        if not self.registry.names():
            raise ValueError(f"no Grain subclasses found in {', '.join(config.grains)}")
        # The store first: it is a child process, and forking after gRPC starts threads is unsafe.
        redis_url = config.redis or (
            running_store_url(config.join) if config.join else await self._start_store()
        )
        self.system_key: str | None = None
        self.server, port = create_server(config)
        self.silo_id = config.resolved_silo_id(port)
        self.address = config.resolved_advertise(port)
        tls: dict[str, Any] = {}
        if config.redis_ca and redis_url.startswith("rediss://"):
            tls["ssl_ca_certs"] = config.redis_ca
        # Never writes into a connection the store closed (a restart): see silo/store_pool.py.
        pool = StorePool.from_url(
            redis_url, max_connections=128, timeout=5.0, socket_timeout=5.0,
            socket_connect_timeout=2.0, health_check_interval=10, **tls,
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        self._wire(self._heartbeat_redis(redis_url))
        # Before serving: a system call from another silo is checked against this key.
        self.system_key = await cluster_system_key(self.redis, KeySpace(config.cluster))
        self.peers.system_key = self.system_key
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        self.watchdog.start()
        await self.membership.start()
        self._on_membership_change(self.membership.snapshot)
        register_service(self.silo_id, self.streams)
        self.streams.start()
        self._spawn(self.catalog.run_idle_collector(self._idle_interval()))
        sweeper = DirectorySweeper(self.directory, self.membership, 5 * config.heartbeat_interval)
        self._spawn(sweeper.run())
        self.reminder_service.start()
        self.metrics.count_tasks(asyncio.get_running_loop())
        if config.metrics_port is not None:
            self.metrics.serve(config.metrics_host, config.metrics_port)
        self._spawn(self.dashboard.sampler.run())
        await self.dashboard.start()
        if self.dashboard.url:
            announce(f"dashboard of silo {self.silo_id} at {self.dashboard.url}")
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.registry.log_summary()
        announce(f"silo {self.silo_id} serving on {self.address} (cluster {config.cluster})")

    async def _start_store(self) -> str:
        self.store = EmbeddedStore(self.config.data_dir, port=self.config.store_port)
        url = await self.store.start()
        announce(f"embedded store at {url} (join more silos with --redis {url} "
                 f"or --join {self.store.data_dir})")
        return url

    def _heartbeat_redis(self, url: str) -> redis.Redis:
        """The lease keeper's own synchronous connection (it must not wait for the loop);
        its timeouts are one heartbeat, so a lost store is noticed within the lease."""
        tls: dict[str, Any] = {}
        if self.config.redis_ca and url.startswith("rediss://"):
            tls["ssl_ca_certs"] = self.config.redis_ca
        beat = self.config.heartbeat_interval
        return redis.Redis.from_url(
            url, socket_timeout=beat, socket_connect_timeout=beat, **tls
        )

    def _wire(self, heartbeat_redis: redis.Redis) -> None:
        config = self.config
        keys = KeySpace(config.cluster)
        self.tracing = configure_tracing(config.tracing(), self.silo_id, config.cluster)
        tracer = self.tracing.tracer if self.tracing is not None else None
        self.storage = RedisGrainStorage(self.redis, keys, self.metrics)
        self.directory = RedisGrainDirectory(self.redis, keys, self.metrics)
        self.journal = RedisJournalStore(self.redis, keys)  # durable agents (silo/journal/)
        self.membership = MembershipService(
            self.redis, keys, self.silo_id, self.address, config.timing(), self.metrics,
            heartbeat_redis,
        )
        mutual = bool(config.tls_client_ca)
        self.security = ClientSecurity.from_files(
            config.tls_ca or config.tls_client_ca if config.tls_cert else None,
            config.tls_cert if mutual else None, config.tls_key if mutual else None,
            config.token,
        )
        self.peers = ChannelPool(self.security, config.max_message_bytes)
        self.grain_client = SiloGrainClient(
            self.address, self._invoke_local, self.membership.refresh, self.security,
            config.max_message_bytes, local_workers=worker_types(self.registry), tracer=tracer,
        )
        self.catalog = Catalog(
            self.silo_id, self.membership, self.storage, self.directory,
            self.metrics, self._grain_ref, config.idle_timeout, config.max_queue_per_grain,
            self.blocking, self.journal,
        )
        self.locator = GrainLocator(self.catalog, self.directory, self.membership)
        limits = DispatchLimits(
            max_in_flight=config.max_in_flight, max_nesting=config.max_nesting,
            max_result_bytes=config.max_message_bytes - 1024,
        )
        self.dispatcher = Dispatcher(
            self.registry, self.locator, self.membership, self.peers, self.metrics, limits,
            self.filters, tracer,
        )
        self.system_calls = SystemCalls(self.dispatcher)
        # Reminders: the API grains and RPCs use, and the service firing owned partitions.
        reminder_store = ReminderStore(self.redis, config.cluster)
        self.reminders = Reminders(reminder_store, self.metrics)
        self.catalog.reminders = self.reminders
        self.reminder_service = ReminderService(
            reminder_store, self.membership, self.system_calls, self.metrics
        )
        self.membership.on_change(self.reminder_service.membership_changed)
        self.membership.on_fenced(self.reminder_service.membership_changed)
        self.membership.on_rejoined(self.reminder_service.membership_changed)
        # Streams (silo/streams/): the pump follows the ring's partitions.
        self.streams = StreamService(
            self.redis, config.cluster,
            [(name, self.registry.get(name).cls) for name in self.registry.names()],
            self.membership, self.system_calls.call, self.metrics,
            StreamSettings(config.stream_maxlen, config.stream_max_age, config.stream_attempts,
                           config.lease_duration),
        )
        self.streams_servicer = StreamsServicer(self.streams)
        for follow in (self.membership.on_change, self.membership.on_fenced,
                       self.membership.on_rejoined):
            follow(self.streams.partitions_changed)
        self.health = health.aio.HealthServicer()
        self.management = ManagementServicer(
            self.catalog, self.dispatcher, self.membership,
            ReminderRpcs(self.reminders, self.registry),
            DurableControl(self.registry, self.journal, self.system_calls),
        )
        self.dashboard = Dashboard(self)  # its report answers Management.SiloReport
        self.management.reporter = self.dashboard.reporter
        add_services(
            self.server, config, GatewayServicer(self.dispatcher, lambda: self.system_key),
            DirectoryServicer(self.registry, self.directory, self.membership),
            self.management, self.health, self.streams_servicer,
        )
        self.membership.on_change(self._on_membership_change)
        self.membership.on_fenced(self.catalog.abandon_all)
        self.membership.on_fenced(self._follow_health)
        self.membership.on_rejoined(self._follow_health)
        self.membership.rejoin_gate = self.catalog.quiescent

    def _grain_ref(self, grain_type: str, key: str) -> GrainRef:
        return self.grain_client.get_grain(grain_type, key)

    async def _invoke_local(
        self, request: Any, timeout: float | None, context: Any, chain: tuple[str, ...]
    ) -> Any:
        return await self.dispatcher.invoke(request, timeout, context, chain)

    def _idle_interval(self) -> float:
        shortest = self.registry.min_idle_timeout(self.config.idle_timeout)
        return max(0.05, min(shortest / 4, 30.0))

    async def _set_health(self, status: Any) -> None:
        for service in ("", *GRAINERY_SERVICES):
            await self.health.set(service, status)

    def _follow_health(self) -> None:
        """Fenced or rejoined: health says what is true when the update runs, so updates
        racing each other still end on the current state."""
        self._spawn(self._apply_health())

    async def _apply_health(self) -> None:
        serving = self.membership.serving and self.dispatcher.admitting
        await self._set_health(
            health_pb2.HealthCheckResponse.SERVING if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task of the silo: logged if it fails, cancelled on stop."""
        return spawn(coroutine, owner=self._tasks)

    # ----- membership changes --------------------------------------------
    def _on_membership_change(self, snapshot: MembershipSnapshot) -> None:
        self.grain_client.follow(snapshot)
        # Forwarding connections to silos that died, left (gracefully or not) or fenced
        # themselves are closed.
        self.peers.retain(m.address for m in snapshot.members if m.state not in GONE_STATES)
        if self.membership.state != ACTIVE or len(self.catalog) == 0:
            return
        if self._rebalancing is None or self._rebalancing.done():
            self._rebalancing = self._spawn(self._rebalance())

    async def _rebalance(self) -> int:
        """Move grains whose ring owner is now another silo (after a join): deactivate them,
        at a bounded rate, so their next call activates them on the new owner."""
        await asyncio.sleep(self.config.heartbeat_interval)  # let the newcomer settle
        me = self.membership.incarnation

        def moved_away(grain: GrainId) -> bool:
            owner = self.membership.ring.owner(grain)
            return owner is not None and owner.incarnation != me

        moved = await self.catalog.deactivate_matching(
            moved_away, "rebalance", REBALANCE_PER_SECOND
        )
        if moved:
            log.info("rebalancing: moving %d grains to their new owners", moved)
        return moved

    # ----- stop -----------------------------------------------------------
    async def stop(self) -> None:
        """Graceful drain; bounded by --drain-timeout."""
        deadline = time.monotonic() + self.config.drain_timeout
        log.info("silo %s draining", self.silo_id)
        self.dispatcher.admitting = False
        self.reminder_service.pause()  # claim nothing more; ticks in flight finish below
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.membership.set_leaving()
        await self.streams.stop()  # hands its partitions' leases over at once
        self.streams_servicer.closing()  # client subscriptions move to other silos
        self.catalog.accepting = False
        await self._drain_calls(deadline)
        log.info("calls drained; deactivating %d grains", len(self.catalog))
        await self.catalog.deactivate_all("shutdown", max(1.0, deadline - time.monotonic()))
        await self.reminder_service.stop(max(0.0, deadline - time.monotonic()))
        log.info("grains deactivated; leaving the membership")
        await self.membership.stop()
        await self._close()
        log.info("silo %s stopped", self.silo_id)

    async def _drain_calls(self, deadline: float) -> None:
        """Wait for the calls in flight; meanwhile hand every idle grain over at once, so
        its next call activates it on another silo instead of waiting for the slowest call
        here (re-checked every DRAIN_POLL seconds for grains whose call just ended)."""
        idle = self.dispatcher.idle
        while True:
            handed = self.catalog.deactivate_idle("shutdown")
            if handed:
                log.info("draining: deactivating %d idle grains", handed)
            remaining = deadline - time.monotonic()
            if idle.is_set() or remaining <= 0:
                break
            try:
                await asyncio.wait_for(idle.wait(), min(DRAIN_POLL, remaining))
            except asyncio.TimeoutError:
                pass
        if not idle.is_set():
            log.warning("drain timeout: %d calls still in flight", self.dispatcher.in_flight)

    async def abort(self) -> None:
        """Release whatever a failed start() had already acquired."""
        membership = getattr(self, "membership", None)
        if membership is not None:
            await membership.stop()
        await self._close()

    async def _close(self) -> None:
        if hasattr(self, "dashboard"):
            await self.dashboard.stop()
        if hasattr(self, "reminder_service"):
            await self.reminder_service.stop(0.0)  # idempotent; after a failed start too
        self.watchdog.stop()
        if hasattr(self, "streams"):
            unregister_service(self.silo_id, self.streams)
            await self.streams.stop()
            await self.streams_servicer.close()
        self.blocking.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if hasattr(self, "server"):
            await self.server.stop(grace=1.0)
        for closer in ("grain_client", "peers"):
            if hasattr(self, closer):
                await getattr(self, closer).close()
        if hasattr(self, "redis"):
            await self.redis.aclose()
        if self.store is not None:
            await self.store.stop()
        if self.tracing is not None:  # last: spans of the drain are exported too
            await asyncio.to_thread(self.tracing.shutdown)
