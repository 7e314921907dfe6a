"""Grains for the stream tests through real silos (tests/integration/test_streams*.py).

Every delivery RPUSHes ``[token, event]`` to ``stream-probe:<Type>/<key>:<ns>/<stream key>``
in the store, outside the grain's state, so what each subscriber received survives the
crash of the silo that hosted it (and a duplicate delivery shows as a repeated token). The
store's URL comes from ``GRAINERY_TEST_STORE_URL``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from grainery import Grain, implicit_subscription
from tests.grains.probe_store import store


def received_key(grain_type: str, key: str, namespace: str, stream_key: str) -> str:
    return f"stream-probe:{grain_type}/{key}:{namespace}/{stream_key}"


class Recording(Grain):
    abstract = True

    async def on_stream_event(self, namespace: str, key: str, event: Any, token: str) -> None:
        await store().rpush(received_key(self.grain_type, self.key, namespace, key),
                            json.dumps([token, event]))


@implicit_subscription("orders")
class OrderWatcher(Recording):
    """Gets every event of every "orders" stream whose key is its own key."""


class Follower(Recording):
    """Subscribes explicitly."""

    async def follow(self, namespace: str, key: str) -> bool:
        return await self.subscribe(namespace, key)

    async def unfollow(self, namespace: str, key: str) -> bool:
        return await self.unsubscribe(namespace, key)

    async def leave(self) -> None:
        self.deactivate_on_idle()


class SlowFollower(Follower):
    """Takes 3 ms per event (work, not a wait): a backlog of events read but not yet
    delivered builds up, so a crash finds some in flight."""

    async def on_stream_event(self, namespace: str, key: str, event: Any, token: str) -> None:
        await asyncio.sleep(0.003)
        await super().on_stream_event(namespace, key, event, token)


class Broken(Follower):
    """A subscriber whose hook always raises."""

    async def on_stream_event(self, namespace: str, key: str, event: Any, token: str) -> None:
        raise RuntimeError(f"cannot handle {token}")


class Picky(Follower):
    """Refuses (raises on) every event that says ``{"bad": true}``; records the others."""

    async def on_stream_event(self, namespace: str, key: str, event: Any, token: str) -> None:
        if isinstance(event, dict) and event.get("bad"):
            raise ValueError(f"refusing {token}")
        await super().on_stream_event(namespace, key, event, token)


class Publisher(Grain):
    async def publish(self, namespace: str, key: str, event: Any) -> str:
        return await self.get_stream(namespace, key).publish(event)

    async def publish_events(self, namespace: str, key: str, events: list[Any]) -> list[str]:
        stream = self.get_stream(namespace, key)
        return [await stream.publish(event) for event in events]

    async def publish_many(self, namespace: str, key: str, start: int, count: int) -> list[str]:
        """Events ``{"n": start}`` .. ``{"n": start + count - 1}``, in order."""
        stream = self.get_stream(namespace, key)
        return [await stream.publish({"n": n}) for n in range(start, start + count)]
