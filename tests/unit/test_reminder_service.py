"""The reminder service's loop over fakes (silo/reminders/service.py): it claims only in the
partitions it owns, and only while serving; it delivers each claimed tick to the right hook
with the tick's values; it completes each delivery with the outcome its failure calls for;
and ownership follows the membership view. The store's Lua itself runs against valkey in
tests/integration/test_reminder_store.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from grainery.client.errors import (
    GrainApplicationError,
    SiloUnavailableError,
    UnknownGrainTypeError,
)
from grainery.silo.cluster.memory import InMemoryCluster, InMemoryMembership
from grainery.silo.metrics import SiloMetrics
from grainery.silo.reminders.model import member_of, retry_delay_ms
from grainery.silo.reminders.service import ReminderService
from grainery.silo.reminders.store import Claimed
from tests.eventually import until

PARTITIONS = 16


class FakeStore:
    """Due partitions and claims set by the test; records what the service asked."""

    partitions = PARTITIONS

    def __init__(self) -> None:
        self.due: list[int] = []
        self.ready: dict[int, list[Claimed]] = {}
        self.claimed_in: list[list[int]] = []
        self.completed: list[tuple[str, str, str, int]] = []
        self.held: dict[int, dict[str, str]] = {}
        self.released: list[tuple[int, str, str]] = []

    async def due_partitions(self) -> list[int]:
        return list(self.due)

    async def claim(self, partitions: Iterable[int], incarnation: str, lease_ms: int,
                    limit: int) -> list[Claimed]:
        wanted = list(partitions)
        self.claimed_in.append(wanted)
        out = [tick for p in wanted for tick in self.ready.pop(p, [])]
        self.due = [p for p in self.due if p not in wanted]
        return out

    async def complete(self, tick: Claimed, incarnation: str, outcome: str, retry_ms: int = 0,
                       reason: str = "", max_undeliverable: int = 5) -> str:
        self.completed.append((tick.member, incarnation, outcome, retry_ms))
        return "advanced"

    async def claims_in(self, partitions: Iterable[int]) -> dict[int, dict[str, str]]:
        return {p: c for p, c in self.held.items() if p in set(partitions)}

    async def release_dead(self, partition: int, member: str, incarnation: str) -> bool:
        self.released.append((partition, member, incarnation))
        return True


class FakeCalls:
    """System calls: records them; raises what the test put in ``failures`` (by name)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, list[Any]]] = []
        self.failures: dict[str, Exception] = {}

    async def call(self, grain_type: str, key: str, hook: str, args: list[Any],
                   timeout: float) -> Any:
        self.calls.append((grain_type, key, hook, args))
        failure = self.failures.get(args[0])
        if failure is not None:
            raise failure
        return None


def tick(store: ReminderService, key: str, name: str, attempt: int = 1) -> Claimed:
    p = store.ownership.partition_of(f"T/{key}")
    return Claimed(p, member_of("T", key, name), "1700000000000", 5000, attempt)


def member(cluster: InMemoryCluster, name: str) -> InMemoryMembership:
    joined = cluster.join(name)
    joined.rejoin()
    joined.adopt()
    return joined


def service_of(membership: InMemoryMembership) -> tuple[ReminderService, FakeStore, FakeCalls]:
    store, calls = FakeStore(), FakeCalls()
    service = ReminderService(store, membership, calls, SiloMetrics(),  # type: ignore[arg-type]
                              poll_interval=0.01)
    return service, store, calls


async def test_it_claims_only_in_owned_partitions_and_delivers_to_the_right_hook() -> None:
    cluster = InMemoryCluster()
    a = member(cluster, "a")
    member(cluster, "b")
    a.adopt()
    service, store, calls = service_of(a)
    service.membership_changed()
    mine = sorted(service.ownership.owned)
    assert mine and len(mine) < PARTITIONS  # b owns the rest
    others = sorted(set(range(PARTITIONS)) - set(mine))
    key = next(f"k{i}" for i in range(1000)
               if service.ownership.partition_of(f"T/k{i}") == mine[0])
    user, runtime = tick(service, key, "daily"), tick(service, key, "$durable:7")
    store.ready[mine[0]] = [user, runtime]
    store.due = [mine[0], others[0]]
    service.start()
    try:
        await until(lambda: len(store.completed) == 2, "both ticks delivered and completed")
    finally:
        await service.stop(1.0)
    assert store.claimed_in[0] == [mine[0]]  # never the partition b owns
    hooks = {args[0]: (hook, args[1]) for _, _, hook, args in calls.calls}
    assert hooks["daily"][0] == "receive_reminder"
    assert hooks["$durable:7"][0] == "on_runtime_reminder"
    sent = hooks["daily"][1]
    assert (sent["scheduled"], sent["period"]) == (1_700_000_000.0, 5.0)
    assert {outcome for _, _, outcome, _ in store.completed} == {"ok"}
    assert {inc for _, inc, _, _ in store.completed} == {a.incarnation}


async def test_each_failure_completes_with_its_outcome() -> None:
    cluster = InMemoryCluster()
    a = member(cluster, "a")
    service, store, calls = service_of(a)
    service.membership_changed()
    key = "k"
    p = service.ownership.partition_of(f"T/{key}")
    calls.failures = {
        "raised": GrainApplicationError("boom", "RuntimeError"),
        "moving": SiloUnavailableError("draining"),
        "orphan": UnknownGrainTypeError("unknown grain type 'T'"),
    }
    store.ready[p] = [tick(service, key, n, attempt=3)
                      for n in ("fine", "raised", "moving", "orphan")]
    store.due = [p]
    service.start()
    try:
        await until(lambda: len(store.completed) == 4, "four ticks completed")
    finally:
        await service.stop(1.0)
    outcomes = {m: (outcome, retry) for m, _, outcome, retry in store.completed}
    assert outcomes == {
        member_of("T", key, "fine"): ("ok", 0),
        member_of("T", key, "raised"): ("failed", 0),
        member_of("T", key, "moving"): ("retry", retry_delay_ms(3, 5000)),
        member_of("T", key, "orphan"): ("undeliverable", 0),
    }


async def test_no_claims_while_not_serving_and_ownership_follows_the_view() -> None:
    cluster = InMemoryCluster()
    a = member(cluster, "a")
    service, store, _ = service_of(a)
    service.membership_changed()
    assert len(service.ownership.owned) == PARTITIONS  # alone: everything
    member(cluster, "b")
    a.adopt()
    service.membership_changed()
    assert 0 < len(service.ownership.owned) < PARTITIONS  # b took its share
    a.fence()
    service.membership_changed()
    assert service.ownership.owned == frozenset()
    store.due = list(range(PARTITIONS))
    service.start()
    try:
        for _ in range(5):
            await service._poll()  # noqa: SLF001 - one round, synchronously
    finally:
        await service.stop(0.0)
    assert store.claimed_in == []


async def test_claims_of_a_dead_silo_are_released_by_the_owner() -> None:
    cluster = InMemoryCluster()
    a, b = member(cluster, "a"), member(cluster, "b")
    a.adopt()
    service, store, _ = service_of(a)
    service.membership_changed()
    b.leave()  # b is gone: its claims in a's partitions need not wait for their deadline
    a.adopt()
    p = sorted(service.ownership.owned)[0]
    store.held = {p: {"m-dead": b.incarnation, "m-alive": a.incarnation}}
    service.start()
    try:
        await until(lambda: store.released, "the dead silo's claim released")
    finally:
        await service.stop(0.0)
    assert store.released == [(p, "m-dead", b.incarnation)]
