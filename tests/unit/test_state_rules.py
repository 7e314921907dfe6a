"""The state rules, in process: a catalog and its activations over the in-memory storage and
directory twins (no Redis, no silo process). The same rules are checked through a real silo
and valkey in tests/integration/test_storage.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grainery.client.errors import ActivationFailedError, StorageUnavailableError
from grainery.client.routing import GrainId
from grainery.silo.activation import Activation
from grainery.silo.blocking import BlockingPool
from grainery.silo.call import GrainCall
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.memory import InMemoryCluster
from grainery.silo.grain import Grain
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainRegistry
from grainery.silo.storage.memory import MemoryGrainDirectory, MemoryGrainStorage, MemoryStore
from grainery.silo.storage.redis_state import Fence

GRAIN = GrainId("Ledger", "k")


class Ledger(Grain):
    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def add_then_raise(self, n: int) -> None:
        self.state["value"] = self.state.get("value", 0) + n
        raise RuntimeError("boom")

    async def get(self) -> int:
        return int(self.state.get("value", 0))


class FlakyStorage(MemoryGrainStorage):
    """Fails the next write: before it reaches the store, or after it was applied."""

    fail: str | None = None

    async def write(self, grain: GrainId, payload: bytes, etag: str, fence: Fence) -> str:
        fail, self.fail = self.fail, None
        if fail == "applied":
            await super().write(grain, payload, etag, fence)
        if fail is not None:
            raise StorageUnavailableError("store gone (the write may or may not have been applied)")
        return await super().write(grain, payload, etag, fence)

    async def read(self, grain: GrainId) -> Any:
        if self.fail == "reads":
            raise StorageUnavailableError("store gone")
        return await super().read(grain)


@pytest.fixture
async def ledger() -> tuple[Activation, FlakyStorage]:
    memory = MemoryStore()
    storage, directory = FlakyStorage(memory), MemoryGrainDirectory(memory)
    registry = GrainRegistry()
    grain_type = registry.register(Ledger)
    membership = InMemoryCluster().join("s1")
    catalog = Catalog("s1", membership, storage, directory, SiloMetrics(),
                      lambda t, k: None, 60.0, 100,  # type: ignore[arg-type, return-value]
                      BlockingPool(1))
    registration = await directory.register(
        GRAIN, membership.incarnation, "s1", membership.address
    )
    return await catalog.activate(GRAIN, grain_type, registration), storage


async def call(activation: Activation, method: str, *args: Any) -> Any:
    spec = activation.grain_type.method(method)
    deadline = asyncio.get_running_loop().time() + 5
    grain = activation.grain_id
    return await activation.call(
        spec, GrainCall(grain.grain_type, grain.key, method, list(args), deadline=deadline)
    )


async def test_a_turn_that_raises_restores_the_persisted_state(
    ledger: tuple[Activation, FlakyStorage],
) -> None:
    activation, _ = ledger
    assert await call(activation, "add", 2) == 2
    with pytest.raises(RuntimeError):
        await call(activation, "add_then_raise", 5)
    assert await call(activation, "get") == 2


async def test_a_write_that_never_landed_is_rolled_back(
    ledger: tuple[Activation, FlakyStorage],
) -> None:
    activation, storage = ledger
    assert await call(activation, "add", 2) == 2
    storage.fail = "not applied"
    with pytest.raises(StorageUnavailableError):
        await call(activation, "add", 5)
    assert await call(activation, "get") == 2
    assert await call(activation, "add", 1) == 3
    assert (await storage.read(GRAIN)).data == {"value": 3}


async def test_a_write_that_landed_is_reloaded_before_the_next_turn(
    ledger: tuple[Activation, FlakyStorage],
) -> None:
    activation, storage = ledger
    assert await call(activation, "add", 2) == 2
    storage.fail = "applied"
    with pytest.raises(StorageUnavailableError):
        await call(activation, "add", 5)
    assert await call(activation, "get") == 7
    assert await call(activation, "add", 1) == 8


async def test_a_reload_that_fails_refuses_the_call_as_not_run(
    ledger: tuple[Activation, FlakyStorage],
) -> None:
    activation, storage = ledger
    storage.fail = "applied"
    with pytest.raises(StorageUnavailableError):
        await call(activation, "add", 5)
    storage.fail = "reads"
    with pytest.raises(ActivationFailedError, match="did not run") as refused:
        await call(activation, "add", 1)
    assert refused.value.retry_safe
    storage.fail = None
    assert await call(activation, "get") == 5
