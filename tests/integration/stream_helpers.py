"""Shared by the stream tests: what a probe subscriber received (tests/grains/stream_probes.py)
and waiting for it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis.asyncio as aioredis

from tests.eventually import eventually
from tests.grains.stream_probes import received_key

GRAINS = ["tests.grains.stream_probes"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def received(redis: aioredis.Redis, subscriber: str, namespace: str,
                   key: str) -> list[tuple[str, Any]]:
    """``(token, event)`` per delivery to ``subscriber`` ("Type/key"), in delivery order."""
    grain_type, _, grain_key = subscriber.partition("/")
    raw = await redis.lrange(received_key(grain_type, grain_key, namespace, key), 0, -1)
    return [tuple(json.loads(item)) for item in raw]  # type: ignore[misc]


async def wait_received(redis: aioredis.Redis, subscriber: str, namespace: str, key: str,
                        tokens: list[str], timeout: float = 30.0) -> list[tuple[str, Any]]:
    """Wait until ``subscriber`` got (at least) every token of ``tokens``; returns all it got."""
    wanted = set(tokens)

    async def check() -> list[tuple[str, Any]] | None:
        got = await received(redis, subscriber, namespace, key)
        seen = {token for token, _ in got}
        if wanted <= seen:
            return got
        raise AssertionError(f"{subscriber} has {len(wanted & seen)} of {len(wanted)}")

    result: list[tuple[str, Any]] = await eventually(
        check, timeout, f"{subscriber} receiving {len(tokens)} events of {namespace}/{key}"
    )
    return result


def deduped(got: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """What a handler that drops every token not newer than the last one it saw keeps."""
    kept: list[tuple[str, Any]] = []
    last: tuple[int, int] = (-1, -1)
    for token, event in got:
        order = tuple(int(part) for part in token.split("-"))
        if order > last:
            kept.append((token, event))
            last = order  # type: ignore[assignment]
    return kept
