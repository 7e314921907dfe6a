"""An in-process cluster: the real call path of one or several silos, without gRPC or processes.

Each :class:`InProcessSilo` wires the runtime's own registry, catalog, locator and dispatcher
(and the SDK grains use to call each other) exactly as ``silo/runtime.py`` does, but over the
in-memory twins: every silo shares one :class:`MemoryStore` (what Redis would hold) and one
:class:`InMemoryCluster` (the member table). A forwarded call goes through
:class:`InProcessPeers`, which hands it to the dispatcher of the silo at that address, after a
round trip through the wire encoding of requests, replies and errors, so cross-silo logic
(forwarding, takeover after a death, unreachable owners) runs here too.

Why: dispatcher, catalog and locator rules are then tested in milliseconds and
deterministically (tests fence, kill and settle silos explicitly; there is no lease clock),
next to the real-Redis integration tests that check the same runtime end to end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ClientSecurity
from grainery.client.codec import decode_result, encode_args, encode_kwargs
from grainery.client.errors import GrainApplicationError, GrainError, TransportError, build_error
from grainery.client.grain_ref import GrainRef
from grainery.client.routing import GrainId
from grainery.silo.blocking import BlockingPool
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.directory import DirectoryEntry, Registration
from grainery.silo.cluster.locator import GrainLocator
from grainery.silo.cluster.memory import InMemoryCluster, InMemoryMembership
from grainery.silo.dispatcher import Dispatcher, DispatchLimits
from grainery.silo.grain import Grain
from grainery.silo.grain_calls import SiloGrainClient
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry
from grainery.silo.storage.memory import MemoryGrainDirectory, MemoryGrainStorage, MemoryStore
from grainery.silo.storage.redis_state import Fence, StoredState
from grainery.silo.system_calls import SystemCalls
from grainery.silo.workers import worker_types

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class StoreOp:
    """One storage or directory operation a silo made (what Redis would have been asked)."""

    silo_id: str
    operation: str  # read, write, clear, register, lookup, unregister, registrants, sweep
    grain: GrainId | None


class RecordingStorage(MemoryGrainStorage):
    """The storage twin, recording each operation, so a test can prove a call touched none."""

    def __init__(self, store: MemoryStore, silo_id: str, ops: list[StoreOp]) -> None:
        super().__init__(store)
        self._silo_id, self._ops = silo_id, ops

    async def read(self, grain: GrainId) -> StoredState:
        self._ops.append(StoreOp(self._silo_id, "read", grain))
        return await super().read(grain)

    async def write(self, grain: GrainId, payload: bytes, etag: str, fence: Fence) -> str:
        self._ops.append(StoreOp(self._silo_id, "write", grain))
        return await super().write(grain, payload, etag, fence)

    async def clear(self, grain: GrainId, etag: str, fence: Fence) -> str:
        self._ops.append(StoreOp(self._silo_id, "clear", grain))
        return await super().clear(grain, etag, fence)


class RecordingDirectory(MemoryGrainDirectory):
    """The directory twin, recording each operation."""

    def __init__(self, store: MemoryStore, silo_id: str, ops: list[StoreOp]) -> None:
        super().__init__(store)
        self._silo_id, self._ops = silo_id, ops

    async def register(
        self, grain: GrainId, incarnation: str, silo_id: str, address: str, dead: str = ""
    ) -> Registration:
        self._ops.append(StoreOp(self._silo_id, "register", grain))
        return await super().register(grain, incarnation, silo_id, address, dead)

    async def lookup(self, grain: GrainId) -> DirectoryEntry | None:
        self._ops.append(StoreOp(self._silo_id, "lookup", grain))
        return await super().lookup(grain)

    async def unregister(self, grain: GrainId, fence: Fence) -> bool:
        self._ops.append(StoreOp(self._silo_id, "unregister", grain))
        return await super().unregister(grain, fence)

    async def registrants(self) -> list[str]:
        self._ops.append(StoreOp(self._silo_id, "registrants", None))
        return await super().registrants()

    async def sweep(self, incarnation: str) -> int:
        self._ops.append(StoreOp(self._silo_id, "sweep", None))
        return await super().sweep(incarnation)


def over_the_wire(error: GrainError) -> GrainError:
    """The error as a remote caller would rebuild it from status code and metadata."""
    error_type = error.error_type if isinstance(error, GrainApplicationError) else ""
    return build_error(error.code, error.message, error.kind, error.retry_safe, error_type)


@dataclass(frozen=True)
class Sent:
    """One call a silo sent to another: where, what, and with how many seconds to run."""

    address: str
    request: pb.InvokeRequest
    timeout: float
    context: dict[str, str] = field(default_factory=dict)
    chain: tuple[str, ...] = ()


class InProcessPeers:
    """One silo's connections to the others (the dispatcher's PeerInvoker, and the pool of the
    SDK grains call through): a call goes to the dispatcher of the silo at ``address``.
    A silo that is down refuses the connection, as a dead process would (retry-safe)."""

    max_message_bytes = MAX_MESSAGE_BYTES

    def __init__(self, cluster: InProcessCluster) -> None:
        self._cluster = cluster
        self.sent: list[Sent] = []

    async def invoke(
        self, address: str, request: pb.InvokeRequest, timeout: float, streamed: bool,
        context: Mapping[str, str] | None = None, chain: tuple[str, ...] = (),
        trace: Mapping[str, str] | None = None,
    ) -> pb.InvokeResponse:
        self.sent.append(Sent(address, request, timeout, dict(context or {}), chain))
        silo = self._cluster.at(address)
        if silo is None or not silo.up:
            refused = TransportError(f"connection to {address} refused; the call was not sent")
            refused.retry_safe = True
            raise refused
        wire = pb.InvokeRequest.FromString(request.SerializeToString())
        tracer = silo.dispatcher.tracer  # the trace context is read as a servicer reads it
        parent = tracer.extract(trace) if tracer is not None and trace else None
        try:
            # In process every peer is a silo of the cluster: a system call is allowed.
            response = await silo.dispatcher.invoke(
                wire, timeout, context, chain, system=wire.system, trace=parent
            )
        except GrainError as error:
            raise over_the_wire(error) from None
        return pb.InvokeResponse.FromString(response.SerializeToString())

    def retain(self, addresses: Iterable[str]) -> list[str]:
        """The pool keeps connections only to live members; in process there is none to
        close, so nothing is dropped."""
        return []

    async def close(self) -> None:
        """Nothing to close: there are no connections."""


class InProcessSilo:
    """One silo's runtime over the shared twins; wired as ``Silo._wire`` wires the real one."""

    def __init__(
        self,
        cluster: InProcessCluster,
        silo_id: str,
        limits: DispatchLimits,
        idle_timeout: float,
        max_queue_per_grain: int,
    ) -> None:
        self.silo_id = silo_id
        self.up = True
        self.membership: InMemoryMembership = cluster.members.join(silo_id)
        self.address = self.membership.address
        self.storage = RecordingStorage(cluster.store, silo_id, cluster.ops)
        self.directory = RecordingDirectory(cluster.store, silo_id, cluster.ops)
        self.metrics = SiloMetrics()
        self.blocking = BlockingPool(2)
        self.peers = InProcessPeers(cluster)
        self.grain_client = SiloGrainClient(
            self.address, self._invoke_local, self.membership.refresh, ClientSecurity(),
            MAX_MESSAGE_BYTES, local_workers=worker_types(cluster.registry),
        )
        self.grain_client.pool = self.peers  # type: ignore[assignment]
        self.catalog = Catalog(
            silo_id, self.membership, self.storage, self.directory, self.metrics,
            self._grain_ref, idle_timeout, max_queue_per_grain, self.blocking,
        )
        self.locator = GrainLocator(self.catalog, self.directory, self.membership)
        self.dispatcher = Dispatcher(
            cluster.registry, self.locator, self.membership, self.peers, self.metrics, limits
        )
        self.system_calls = SystemCalls(self.dispatcher)

    def _grain_ref(self, grain_type: str, key: str) -> GrainRef:
        return self.grain_client.get_grain(grain_type, key)

    async def _invoke_local(
        self, request: pb.InvokeRequest, timeout: float | None, context: Mapping[str, str],
        chain: tuple[str, ...],
    ) -> Any:
        return await self.dispatcher.invoke(request, timeout, context, chain)

    async def request(
        self, grain_type: str, key: str, method: str, *args: Any,
        timeout: float = 5.0, kwargs: dict[str, Any] | None = None,
    ) -> pb.InvokeResponse:
        """A call as it arrives at this silo's gateway from a client."""
        request = pb.InvokeRequest(
            grain_type=grain_type, grain_key=key, method=method, args_json=encode_args(args),
            kwargs_json=encode_kwargs(kwargs) if kwargs else "",
        )
        return await self.dispatcher.invoke(request, timeout)

    async def call(
        self, grain_type: str, key: str, method: str, *args: Any, timeout: float = 5.0
    ) -> Any:
        """As :meth:`request`, returning the decoded result."""
        response = await self.request(grain_type, key, method, *args, timeout=timeout)
        return decode_result(response.result_json)

    def fence(self) -> None:
        """The lease lapsed: the silo stops serving and drops its table (``on_fenced``)."""
        self.membership.fence()
        self.catalog.abandon_all()

    def kill(self) -> None:
        """The process died: the others declare it dead and can no longer reach it."""
        self.fence()
        self.up = False

    def follow(self) -> None:
        """Adopt the shared member table (what a heartbeat read and its listeners do)."""
        self.grain_client.follow(self.membership.adopt())

    def close(self) -> None:
        self.blocking.close()


class InProcessCluster:
    """Silos sharing one store twin and one member table; build it inside a running loop."""

    def __init__(
        self,
        registry: GrainRegistry,
        limits: DispatchLimits | None = None,
        idle_timeout: float = 600.0,
        max_queue_per_grain: int = 1000,
    ) -> None:
        self.registry = registry
        self.store = MemoryStore()
        self.members = InMemoryCluster("in-process")
        self.ops: list[StoreOp] = []
        self.silos: dict[str, InProcessSilo] = {}
        self._limits = limits or DispatchLimits()
        self._idle_timeout = idle_timeout
        self._max_queue = max_queue_per_grain

    def add(self, silo_id: str) -> InProcessSilo:
        """Start a silo; every live silo then sees the new member table."""
        silo = InProcessSilo(self, silo_id, self._limits, self._idle_timeout, self._max_queue)
        self.silos[silo_id] = silo
        self.settle()
        return silo

    def at(self, address: str) -> InProcessSilo | None:
        return next((s for s in self.silos.values() if s.address == address), None)

    def settle(self) -> None:
        """Every live silo adopts the current member table."""
        for silo in self.silos.values():
            if silo.up:
                silo.follow()

    def key_owned_by(self, silo: InProcessSilo, grain_type: str, prefix: str = "k") -> str:
        """The first key ``prefix<n>`` whose ring owner (as ``silo`` sees the ring) is ``silo``."""
        for n in range(10_000):
            owner = silo.membership.ring.owner(GrainId(grain_type, f"{prefix}{n}"))
            if owner is not None and owner.incarnation == silo.membership.incarnation:
                return f"{prefix}{n}"
        raise AssertionError(f"no key of {grain_type} is owned by {silo.silo_id}")

    def entry(self, grain_type: str, key: str) -> DirectoryEntry | None:
        """The grain's directory entry in the shared store (no operation recorded)."""
        stored = self.store.entries.get(GrainId(grain_type, key))
        return stored.public() if stored is not None else None

    def ops_for(self, grain_type: str, key: str) -> list[StoreOp]:
        grain = GrainId(grain_type, key)
        return [op for op in self.ops if op.grain == grain]

    def close(self) -> None:
        for silo in self.silos.values():
            silo.close()


class ClusterFactory:
    """Builds in-process clusters hosting ``grain_classes`` (``factory(limits=...)``), and
    closes every one it built: the body of the per-test ``build`` fixtures."""

    def __init__(self, *grain_classes: type[Grain]) -> None:
        self._classes = grain_classes
        self._built: list[InProcessCluster] = []

    def __call__(self, **options: Any) -> InProcessCluster:
        registry = GrainRegistry()
        for cls in self._classes:
            registry.register(cls)
        cluster = InProcessCluster(registry, **options)
        self._built.append(cluster)
        return cluster

    def close(self) -> None:
        for cluster in self._built:
            cluster.close()
