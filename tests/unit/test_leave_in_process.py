"""A graceful leave in-process: a turn still running on a silo that began to leave calls a
grain the silo's ring still places on itself. The silo refuses that call before it runs
(retry-safe); the call is retried on the grain's new owner instead of failing the turn
(before: the turn's caller got ``inner_call (unavailable): silo ... is not serving``).
Real catalog, locator and dispatcher over the twins (tests/inprocess.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from grainery.client.routing import GrainId
from grainery.silo.grain import Grain
from grainery.silo.registry import GrainRegistry
from tests.eventually import eventually
from tests.inprocess import InProcessCluster


class Gate:
    """Lets the test hold a turn open while the silo starts to leave (reset per test)."""

    entered = asyncio.Event()
    release = asyncio.Event()


class Caller(Grain):
    async def hold_then_ask(self, key: str) -> str:
        Gate.entered.set()
        await Gate.release.wait()
        where: str = await self.get_grain("Caller", key).where()
        return where

    async def where(self) -> str:
        return self.silo_id


@pytest.fixture
async def cluster() -> AsyncIterator[InProcessCluster]:
    Gate.entered, Gate.release = asyncio.Event(), asyncio.Event()
    registry = GrainRegistry()
    registry.register(Caller)
    built = InProcessCluster(registry)
    yield built
    built.close()


async def test_a_leaving_silos_own_refusal_is_retried_on_the_new_owner(
    cluster: InProcessCluster,
) -> None:
    leaver, stayer = cluster.add("a"), cluster.add("b")
    caller = cluster.key_owned_by(leaver, "Caller", "caller")
    target = cluster.key_owned_by(leaver, "Caller", "target")
    call = asyncio.create_task(leaver.call("Caller", caller, "hold_then_ask", target))

    async def entered() -> bool:
        return Gate.entered.is_set()

    await eventually(entered, 5, "the calling turn running on the leaving silo")
    # Silo.stop()'s order: refuse new calls first, then leave the ring (announced to all).
    leaver.dispatcher.admitting = False
    leaver.membership.set_leaving()
    stayer.follow()
    assert leaver.grain_client.router.route(GrainId("Caller", target)) == leaver.address, (
        "the leaving silo's own client has not re-learned the membership yet"
    )
    Gate.release.set()
    assert await call == "b"
