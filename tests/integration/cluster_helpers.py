"""Helpers shared by the cluster tests: event lists, pinned stubs, a counter load."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import redis.asyncio as aioredis

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.codec import encode_args
from grainery.silo.testing import TestStore


class Events:
    """Activation/deactivation events the probe grains push to Redis."""

    def __init__(self, store: TestStore) -> None:
        self.redis = aioredis.from_url(store.url)

    async def activations(self, grain_type: str, key: str) -> list[tuple[str, str]]:
        raw = await self.redis.lrange(f"events:activate:{grain_type}:{key}", 0, -1)
        out = []
        for item in raw:
            silo, activation, _ = item.decode().split("|", 2)
            out.append((silo, activation))
        return out

    async def close(self) -> None:
        await self.redis.aclose()


class PinnedStub:
    """Calls one silo only (no client-side routing): exercises silo-side forwarding."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.gateway = pb_grpc.GatewayStub(self.channel)

    async def invoke(self, grain_type: str, key: str, method: str, *args: Any,
                     timeout: float = 10.0) -> pb.InvokeResponse:
        request = pb.InvokeRequest(grain_type=grain_type, grain_key=key, method=method,
                                   args_json=encode_args(args))
        response: pb.InvokeResponse = await self.gateway.Invoke(request, timeout=timeout)
        return response

    async def close(self) -> None:
        await self.channel.close()


class CounterLoad:
    """Increments SlowWriter counters in a loop, counting attempted and acknowledged writes,
    so a test can check acknowledged <= stored <= attempted after a failure."""

    def __init__(self, client: Any, keys: list[str], timeout: float) -> None:
        from collections import Counter

        self.client, self.keys, self.timeout = client, keys, timeout
        self.acked: Counter[str] = Counter()
        self.attempted: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> CounterLoad:
        self._workers = [asyncio.create_task(self._hammer(key)) for key in self.keys]
        return self

    async def _hammer(self, key: str) -> None:
        from grainery.client import GrainError

        while not self._stop.is_set():
            self.attempted[key] += 1
            try:
                await self.client.get_grain("SlowWriter", key).add(1, timeout=self.timeout)
                self.acked[key] += 1
            except GrainError:
                await asyncio.sleep(0.05)

    @property
    def total_acked(self) -> int:
        return sum(self.acked.values())

    async def stop(self) -> dict[str, int]:
        """Stop the load; returns each counter's stored value."""
        self._stop.set()
        await asyncio.gather(*self._workers)
        return {k: await self.client.get_grain("SlowWriter", k).get() for k in self.keys}
