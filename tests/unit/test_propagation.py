"""Cancellation, SystemExit and KeyboardInterrupt are never swallowed on the way up."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from grainery.client.routing import GrainId
from grainery.silo.activation import Activation, Phase, _Call
from grainery.silo.blocking import BlockingPool
from grainery.silo.call import GrainCall
from grainery.silo.catalog import Catalog
from grainery.silo.cluster.directory import DirectoryEntry, Registration, ScriptBatcher
from grainery.silo.cluster.memory import InMemoryCluster
from grainery.silo.grain import Grain
from grainery.silo.metrics import SiloMetrics
from grainery.silo.registry import GrainType
from grainery.silo.storage.redis_state import Fence, StoredState

GRAIN = GrainId("Probe", "k")


async def _never_answers(**_: Any) -> Any:
    await asyncio.Event().wait()


def _batch_task() -> asyncio.Task[Any]:
    [task] = [t for t in asyncio.all_tasks() if "_send" in repr(t.get_coro())]
    return task


async def test_directory_batcher_propagates_its_cancellation() -> None:
    batcher = ScriptBatcher(cast(Any, None), _never_answers)
    caller = asyncio.create_task(batcher(["key"], ["arg"]))
    for _ in range(3):
        await asyncio.sleep(0)
    send = _batch_task()
    send.cancel()
    await asyncio.wait([send, caller], timeout=5)
    assert send.cancelled(), "the batch task swallowed its cancellation"
    assert caller.cancelled()


async def test_directory_batcher_hands_errors_to_every_caller() -> None:
    async def broken(**_: Any) -> Any:
        raise ConnectionError("store gone")

    batcher = ScriptBatcher(cast(Any, None), broken)
    with pytest.raises(ConnectionError):
        await batcher(["key"], ["arg"])


class _Exits(Grain):
    async def on_activate(self) -> None:
        raise SystemExit(3)


class _FakeDirectory:
    unregistered = 0

    async def unregister(self, grain: GrainId, fence: Fence) -> bool:
        self.unregistered += 1
        return True


async def test_system_exit_in_on_activate_is_not_wrapped() -> None:
    directory = _FakeDirectory()
    membership = InMemoryCluster().join("s1")
    catalog = Catalog("s1", membership, cast(Any, None), cast(Any, directory), SiloMetrics(),
                      cast(Any, None), 60.0, 10, BlockingPool(1))
    entry = DirectoryEntry(membership.incarnation, "s1", "a", "1")
    registration = Registration(True, entry, StoredState({}, ""))
    grain_type = cast(GrainType, SimpleNamespace(name="Probe", cls=_Exits))
    with pytest.raises(SystemExit):
        await catalog.activate(GRAIN, grain_type, registration)
    assert directory.unregistered == 1 and len(catalog) == 0


@pytest.mark.parametrize("error", [SystemExit(2), KeyboardInterrupt()])
async def test_system_exit_in_a_turn_propagates(error: BaseException) -> None:
    async def method(_grain: Any) -> None:
        raise error

    activation = Activation(GRAIN, cast(GrainType, None), 10, cast(Any, None), lambda: True)
    activation.phase = Phase.ACTIVE
    grain = SimpleNamespace(state={}, _filters_calls=False)  # no on_incoming_call
    activation.grain, activation.context = cast(Any, grain), cast(
        Any, SimpleNamespace(deactivation_request=None, uncertain=False, write_failures=0,
                             last_persisted=dict))
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    spec = cast(Any, SimpleNamespace(name="m", func=method))
    with pytest.raises(type(error)):
        call = GrainCall(GRAIN.grain_type, GRAIN.key, "m", [], deadline=1e18)
        await activation._run_turn(_Call(future, spec, call))
    assert not activation.running
