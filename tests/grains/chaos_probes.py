"""The grain the chaos suite hammers: every write appends one unique op id.

An append is idempotency-checkable from outside: after the run, the stored list
says exactly which ops were applied, and how often. Every answer names the
activation that produced it (a random id drawn in ``on_activate``, so two
activations of one grain are never confused, even on one silo), which lets the
suite check from the caller's side that two activations never served at once.

Activation and deactivation events also go, best effort, to a Redis list (URL
from GRAINERY_TEST_REDIS): they are only there to explain a failure, so a store
that is down while they are written must not fail or stall the grain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from typing import Any

import redis.asyncio as aioredis

from grainery.silo import Grain

EVENTS_PREFIX = "chaos:events"
_EVENT_TIMEOUT = 1.0  # seconds; a diagnostic must not hold a turn for long
_redis: aioredis.Redis | None = None


def events_key(key: str) -> str:
    """The Redis list that holds ChaosProbe/``key``'s activation events."""
    return f"{EVENTS_PREFIX}:{key}"


def _events() -> aioredis.Redis | None:
    global _redis
    url = os.environ.get("GRAINERY_TEST_REDIS")
    if url and _redis is None:
        _redis = aioredis.Redis.from_url(
            url, socket_timeout=_EVENT_TIMEOUT, socket_connect_timeout=_EVENT_TIMEOUT
        )
    return _redis


class ChaosProbe(Grain):
    """``append(op_id)`` writes; ``peek`` and ``ops`` only read."""

    activation_id: str

    async def on_activate(self) -> None:
        self.activation_id = uuid.uuid4().hex[:12]
        await self._record(f"activate {self.silo_id} {self.activation_id}")

    async def on_deactivate(self, reason: str) -> None:
        await self._record(f"deactivate {self.silo_id} {self.activation_id} {reason}")

    async def append(self, op_id: str) -> dict[str, Any]:
        """Append ``op_id`` to the stored list; acknowledged only once the write is durable."""
        ops = self.state.setdefault("ops", [])
        ops.append(op_id)
        await self.write_state()
        return self._who(count=len(ops))

    async def peek(self) -> dict[str, Any]:
        """Who is serving, and how many ops this activation holds (no write)."""
        return self._who(count=len(self.state.get("ops", [])))

    async def ops(self) -> dict[str, Any]:
        """The whole list as this activation holds it."""
        return self._who(ops=list(self.state.get("ops", [])))

    def _who(self, **extra: Any) -> dict[str, Any]:
        return {"silo": self.silo_id, "activation": self.activation_id, **extra}

    async def _record(self, event: str) -> None:
        events = _events()
        if events is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(events.rpush(events_key(self.key), event), _EVENT_TIMEOUT)
