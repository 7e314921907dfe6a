"""Runtime hooks (silo/hooks.py) are reachable only by system calls, which only the runtime
makes: a hook is not a callable method, a client's ``system`` request is refused, and a
system call reaches the grain's hook wherever the grain lives (forwarded between silos)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.codec import encode_args
from grainery.client.errors import PermissionDeniedError, UnknownMethodError
from grainery.client.routing import GrainId
from grainery.silo.grain import Grain
from grainery.silo.registry import callable_methods, hook_methods
from tests.inprocess import ClusterFactory, InProcessCluster


class Hooked(Grain):
    async def receive_reminder(self, name: str, tick: dict[str, Any]) -> str:
        self.state.setdefault("ticks", []).append(name)
        return f"{name}@{self.silo_id}"

    async def ticks(self) -> list[str]:
        return list(self.state.get("ticks", []))


@pytest.fixture
async def build() -> AsyncIterator[ClusterFactory]:
    factory = ClusterFactory(Hooked)
    yield factory
    factory.close()


def test_a_hook_is_not_a_callable_method() -> None:
    assert "receive_reminder" not in callable_methods(Hooked)
    assert "ticks" in callable_methods(Hooked)
    # Beside the hooks the class defines, those every grain has (Grain's own, e.g. streams'
    # batch delivery).
    assert set(hook_methods(Hooked)) - set(hook_methods(Grain)) == {"receive_reminder"}


async def test_calling_a_hook_as_a_method_is_an_unknown_method(build: ClusterFactory) -> None:
    cluster: InProcessCluster = build()
    a = cluster.add("a")
    with pytest.raises(UnknownMethodError):
        await a.call("Hooked", "k", "receive_reminder", "r", {})


async def test_a_system_request_from_a_client_is_refused(build: ClusterFactory) -> None:
    cluster: InProcessCluster = build()
    a = cluster.add("a")
    request = pb.InvokeRequest(
        grain_type="Hooked", grain_key="k", method="receive_reminder",
        args_json=encode_args(["r", {}]), system=True,
    )
    with pytest.raises(PermissionDeniedError):
        await a.dispatcher.invoke(request, 5.0)  # as the gateway passes a client's call
    assert a.catalog.get(GrainId("Hooked", "k")) is None  # nothing was activated


async def test_a_system_call_reaches_the_hook_on_the_grains_owner(build: ClusterFactory) -> None:
    cluster: InProcessCluster = build()
    a, b = cluster.add("a"), cluster.add("b")
    key = cluster.key_owned_by(b, "Hooked")
    tick = {"scheduled": 0.0, "actual": 0.0, "period": 60.0}  # what the reminder service sends
    assert await a.system_calls.call("Hooked", key, "receive_reminder", ["daily", tick], 5.0) \
        == "daily@b"
    assert [sent.request.system for sent in a.peers.sent] == [True]  # forwarded as a system call
    assert await a.call("Hooked", key, "ticks") == ["daily"]


async def test_a_system_call_for_a_missing_hook_is_an_unknown_method(
    build: ClusterFactory,
) -> None:
    cluster: InProcessCluster = build()
    a = cluster.add("a")
    with pytest.raises(UnknownMethodError):
        await a.system_calls.call("Hooked", "k", "on_stream_event", ["ns", "k", 1, "t"], 5.0)
