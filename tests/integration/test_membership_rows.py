"""Membership against the real store: left vs dead, pruned rows, cheap reads, the lease thread.

Driven in-process (no silo processes): each test owns its cluster name, so the
member hash it counts holds only its own rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from grainery.client.routing import ACTIVE, LEFT
from grainery.silo.cluster.membership import MembershipService, MembershipTiming
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage.keys import KeySpace
from grainery.silo.testing import TestStore
from tests.eventually import eventually

LONG = MembershipTiming(heartbeat_interval=1.0, lease_duration=10.0)
PRUNE_FAST = MembershipTiming(heartbeat_interval=1.0, lease_duration=10.0, dead_retention=0.2)


class Members:
    def __init__(self, store: TestStore) -> None:
        self.store = store
        self.redis = aioredis.Redis.from_url(store.url)
        self.keys = KeySpace(f"rows-{uuid.uuid4().hex[:8]}")
        self.services: list[MembershipService] = []

    def service(self, silo_id: str, timing: MembershipTiming = LONG,
                heartbeat: bool = False) -> MembershipService:
        extra: dict[str, Any] = {}
        if heartbeat:
            extra["heartbeat_redis"] = redis.Redis.from_url(
                self.store.url, socket_timeout=timing.heartbeat_interval)
        service = MembershipService(self.redis, self.keys, silo_id, f"{silo_id}:7070", timing,
                                    SiloMetrics(), **extra)
        self.services.append(service)
        return service

    async def rows(self) -> int:
        return int(await self.redis.hlen(self.keys.members))


@pytest.fixture
async def members(store: TestStore) -> AsyncIterator[Members]:
    setup = Members(store)
    yield setup
    for service in setup.services:
        await service.stop()
    await setup.redis.aclose()


async def test_a_graceful_leave_is_left_then_pruned(members: Members) -> None:
    a, b = members.service("a", PRUNE_FAST), members.service("b", PRUNE_FAST)
    await a._join()
    await b._join()
    gone = b.incarnation
    await b.stop()
    states = {m.incarnation: m.state for m in (await a.refresh()).members}
    assert states[gone] == LEFT, states  # "left", not "dead"
    assert [m.silo_id for m in a.ring.snapshot.active] == ["a"]  # and off the ring

    async def pruned() -> bool:
        return gone not in {m.incarnation for m in (await a.refresh()).members}

    await eventually(pruned, 5, "the left row being pruned after its retention")
    assert await members.rows() == 1
    assert a.is_alive(gone) is False  # remembered as gone: takeovers need no further read


async def test_restarts_keep_the_member_rows_bounded(members: Members) -> None:
    watcher = members.service("w")
    await watcher._join()
    for _ in range(30):  # a silo crashing and restarting under the same id, 30 times
        await members.service("x")._join()
    assert await members.rows() == 2, "old incarnations linger in the membership"
    snapshot = await watcher.refresh()
    assert sorted((m.silo_id, m.state) for m in snapshot.members) == [("w", ACTIVE), ("x", ACTIVE)]


async def test_concurrent_refreshes_share_reads(members: Members) -> None:
    """A burst of takeovers (each asking about an unknown incarnation) must not queue one full
    membership read each behind a lock."""
    a = members.service("a")
    await a._join()
    reads = 0
    script = a._read_script

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await script(*args, **kwargs)

    a._read_script = counted  # type: ignore[assignment]
    snapshots = await asyncio.gather(*(a.refresh() for _ in range(200)))
    assert reads <= 2, f"{reads} membership reads for 200 concurrent refreshes"
    assert all(s.version == snapshots[0].version for s in snapshots)


async def test_a_read_started_before_a_join_does_not_hide_it(members: Members) -> None:
    """Sharing reads must never answer a caller with a read older than its question."""
    a, b = members.service("a"), members.service("b")
    await a._join()
    first = asyncio.ensure_future(a.refresh())  # in flight
    await asyncio.sleep(0)
    await b._join()
    assert a.is_alive(b.incarnation) is None
    second = await a.refresh()  # asked after b joined: must see b
    assert b.incarnation in {m.incarnation for m in second.members}
    await first


async def test_the_lease_survives_a_blocked_event_loop(members: Members) -> None:
    """The heartbeat runs on its own thread and connection: grain code blocking the loop
    for longer than the lease does not fence the silo."""
    timing = MembershipTiming(heartbeat_interval=0.1, lease_duration=0.5)
    a = members.service("a", timing, heartbeat=True)
    await a.start()
    incarnation = a.incarnation
    time.sleep(3 * timing.lease_duration)  # noqa: ASYNC251 - the blocking under test
    assert a.serving and a.state == ACTIVE and a.incarnation == incarnation
    watcher = members.service("w", timing, heartbeat=False)
    await watcher._join()
    assert watcher.is_alive(incarnation) is True
