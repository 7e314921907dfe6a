"""Grains and silo-wide call filters for the call-filter tests (tests/integration/
test_filters.py). The counting filter records each call it sees in the store named by
``PIPELINE_K_REDIS`` (one hash per cluster), so a test can count across silo processes."""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis

from grainery.client.filters import Call, Proceed
from grainery.silo import Grain
from grainery.silo.call import current_call

_store: aioredis.Redis | None = None


def _redis() -> aioredis.Redis:
    global _store
    if _store is None:
        _store = aioredis.Redis.from_url(os.environ["PIPELINE_K_REDIS"])
    return _store


async def count_calls(call: Call, proceed: Proceed) -> Any:
    """A timing filter: counts every call this silo runs, per ``Type/key.method``, and
    the silo it ran on (``silo:<pid>``)."""
    try:
        return await proceed()
    finally:
        hash_name = f"pipeline-k:{os.environ['PIPELINE_K_RUN']}"
        await _redis().hincrby(hash_name, call.target, 1)
        await _redis().hincrby(hash_name, f"pid:{os.getpid()}", 1)


async def check_token(call: Call, proceed: Proceed) -> Any:
    """Refuses ``drop`` unless the key belongs to an admin."""
    if call.method == "drop" and not call.key.startswith("admin"):
        raise PermissionError(f"{call.key} may not drop")
    return await proceed()


async def explode(call: Call, proceed: Proceed) -> Any:
    """A buggy filter: fails for one key."""
    if call.key == "boom":
        raise ZeroDivisionError("filter bug")
    return await proceed()


async def set_tenant(call: Call, proceed: Proceed) -> Any:
    call.context["tenant"] = "acme"
    return await proceed()


class FilteredAgent(Grain):
    async def where(self) -> str:
        return self.silo_id

    async def ask(self, key: str) -> str:
        where: str = await self.get_grain("FilteredAgent", key).where()
        return where

    async def drop(self) -> str:
        return "dropped"

    async def tenant(self) -> str | None:
        call = current_call()
        assert call is not None
        return call.context.get("tenant")


class WrappedAgent(Grain):
    async def on_incoming_call(self, call: Call, proceed: Proceed) -> Any:
        return {"wrapped": await proceed(), "method": call.method}

    async def echo(self, value: Any) -> Any:
        return value


async def no_op(call: Call, proceed: Proceed) -> Any:
    """Does nothing but run the call: what one filter costs."""
    return await proceed()
