"""Grains that let tests observe the runtime from outside.

Activation and deactivation events are pushed to Redis lists (URL from the
GRAINERY_TEST_REDIS environment variable) so a test can prove, across silo
processes, how many activations a grain had, where, and with which activation id
(ids of one grain sort in registration order: they start with the store's time).
"""

from __future__ import annotations

import asyncio
import datetime
import os
from typing import Any

import redis.asyncio as aioredis

from grainery.silo import Grain

_redis: aioredis.Redis | None = None


def _events() -> aioredis.Redis | None:
    global _redis
    url = os.environ.get("GRAINERY_TEST_REDIS")
    if url and _redis is None:
        _redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=32)
        )
    return _redis


async def record(kind: str, grain: Grain, detail: str = "") -> None:
    events = _events()
    if events is not None:
        activation = grain._ctx.fence.activation
        await events.rpush(f"events:{kind}:{grain.grain_type}:{grain.key}",
                           f"{grain.silo_id}|{activation}|{detail}")


class Recorder(Grain):
    """Records every activation (silo, activation id) and deactivation (reason)."""

    async def on_activate(self) -> None:
        await record("activate", self)

    async def on_deactivate(self, reason: str) -> None:
        await record("deactivate", self, reason)

    async def ping(self) -> str:
        return self.silo_id

    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def get(self) -> int:
        return int(self.state.get("value", 0))


class Turns(Grain):
    """Detects overlapping turns and records the order calls ran in."""

    async def on_activate(self) -> None:
        self.busy = False
        self.overlaps = 0
        self.order: list[int] = []

    async def track(self, i: int, pause: float = 0.001) -> int:
        if self.busy:
            self.overlaps += 1
        self.busy = True
        await asyncio.sleep(pause)
        self.order.append(i)
        self.busy = False
        return i

    async def report(self) -> dict[str, Any]:
        return {"overlaps": self.overlaps, "order": self.order}

    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


class Flaky(Grain):
    """on_activate fails the first ``fail_times`` activations of each key (kept per process)."""

    attempts: dict[str, int] = {}

    async def on_activate(self) -> None:
        count = Flaky.attempts.get(self.key, 0) + 1
        Flaky.attempts[self.key] = count
        if self.key.startswith("fail-always") or (self.key.startswith("fail-once") and count == 1):
            raise RuntimeError(f"activation {count} of {self.key} refused")

    async def attempts_so_far(self) -> int:
        return Flaky.attempts.get(self.key, 0)


class Boom(Grain):
    async def explode(self, message: str) -> None:
        raise ValueError(message)

    async def unserialisable(self) -> Any:
        return {1, 2, 3}

    async def big(self, size: int) -> str:
        return "x" * size

    async def echo(self, *args: Any) -> list[Any]:
        return list(args)

    async def kw_only(self, *, required: int) -> int:
        return required


class Guarded(Grain):
    """Only ``ok`` (and ``inherited``) are callable; everything else must be unreachable."""

    data = 42

    async def ok(self) -> str:
        return "ok"

    async def _private(self) -> str:
        return "private"

    async def __aenter__(self) -> str:
        return "dunder"

    def sync_method(self) -> str:
        return "sync"

    async def on_activate(self) -> None:  # overridden hook: still not callable
        self.state.setdefault("hooks", 0)


class GuardedChild(Guarded):
    async def child(self) -> str:
        return "child"


class Sleepy(Grain):
    """A grain with a short per-type idle timeout."""

    idle_timeout = 0.5

    async def on_activate(self) -> None:
        await record("activate", self)

    async def on_deactivate(self, reason: str) -> None:
        await asyncio.sleep(0.2)  # a slow deactivation widens the race window
        await record("deactivate", self, reason)

    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])


class Relay(Grain):
    """Grain-to-grain calls."""

    async def forward_add(self, key: str, n: int) -> int:
        return int(await self.get_grain("Recorder", key).add(n))

    async def where(self, key: str) -> str:
        return str(await self.get_grain("Recorder", key).ping())


class SlowWriter(Grain):
    """Writes after a pause: lets a test freeze a silo between a call's start and its write."""

    async def on_activate(self) -> None:
        await record("activate", self)

    async def slow_add(self, n: int, delay: float) -> int:
        await asyncio.sleep(delay)
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def get(self) -> int:
        return int(self.state.get("value", 0))


class StateRules(Grain):
    """What ``self.state`` holds after failed turns and refused or failed writes."""

    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def add_then_raise(self, n: int) -> None:
        self.state["value"] = self.state.get("value", 0) + n
        raise RuntimeError("changed state, then failed")

    async def add_unsaved(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        return int(self.state["value"])

    async def add_swallowing_failure(self, n: int) -> str:
        """The write fails, the grain catches it and returns normally: still restored."""
        self.state["value"] = self.state.get("value", 0) + n
        try:
            await self.write_state()
        except Exception as exc:  # noqa: BLE001 - the point of the probe
            return type(exc).__name__
        return "written"

    async def stamp(self) -> None:
        self.state["when"] = datetime.datetime.now(datetime.timezone.utc)
        await self.write_state()

    async def get(self) -> int:
        return int(self.state.get("value", 0))

    async def keys(self) -> list[str]:
        return sorted(self.state)

    async def clear(self) -> None:
        await self.clear_state()


class Ephemeral(Grain):
    """Deactivates after every call: one activation and deactivation per call."""

    async def touch(self) -> str:
        self.deactivate_on_idle()
        return self.silo_id


# ----- gates: a test opens them by setting a Redis key -------------------------------
def _gate_client() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["GRAINERY_TEST_REDIS"])


async def wait_gate(name: str) -> None:
    """Wait (yielding to the loop) until the test sets ``gate:<name>``."""
    events = _events()
    assert events is not None, "gates need GRAINERY_TEST_REDIS"
    while not await events.exists(f"gate:{name}"):  # noqa: ASYNC110 - set by another process
        await asyncio.sleep(0.02)


def wait_gate_sync(name: str) -> str:
    """Wait *blocking the calling thread* until the test sets ``gate:<name>``."""
    import time

    client = _gate_client()
    try:
        while not client.exists(f"gate:{name}"):
            time.sleep(0.02)
    finally:
        client.close()
    return name


class Gated(Grain):
    """Activation and turns that wait for gates the test controls (fencing tests)."""

    async def on_activate(self) -> None:
        await record("activate", self)
        if self.key.startswith("gate-activate"):
            await wait_gate(f"activate:{self.key}")

    async def hold(self, gate: str) -> str:
        await wait_gate(f"go:{gate}")  # lets the test queue calls behind this one
        return wait_gate_sync(f"release:{gate}")  # then blocks the loop, like a sync SDK

    async def wait(self, gate: str) -> str:
        await wait_gate(f"release:{gate}")
        return gate

    async def mark(self, i: int) -> int:
        await record("ran", self, str(i))
        return i

    async def ping(self) -> str:
        return self.silo_id


class Blocker(Grain):
    """Synchronous work in a grain: directly (blocks the loop) or through run_blocking."""

    async def block(self, seconds: float) -> float:
        import time

        time.sleep(seconds)  # noqa: ASYNC251 - deliberately blocking, as a sync LLM SDK call
        return seconds

    async def in_thread(self, gate: str) -> str:
        return await self.run_blocking(wait_gate_sync, f"release:{gate}")

    async def add(self, n: int) -> int:
        self.state["value"] = self.state.get("value", 0) + n
        await self.write_state()
        return int(self.state["value"])

    async def ping(self) -> str:
        return self.silo_id
