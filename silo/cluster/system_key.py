"""The cluster's system key: how one silo proves to another that it is a silo.

Runtime hooks (a reminder tick, a stream delivery) are reached by system calls that may
hop from the silo serving the reminder or stream to the silo hosting the grain. A client
must never be able to make such a call, even one holding the ``--token``. Every silo of a
cluster reads the same random key from the store (the first one to start creates it);
clients never touch the store, so the key separates silos from callers without any
configuration.
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from grainery.silo.storage.keys import KeySpace


async def cluster_system_key(redis: aioredis.Redis, keys: KeySpace) -> str:
    """The cluster's key, created by the first silo that asks (SET NX: every silo agrees)."""
    await redis.set(keys.system_key, secrets.token_urlsafe(32), nx=True)
    value = await redis.get(keys.system_key)
    if value is None:  # deleted between the two commands: try once more
        await redis.set(keys.system_key, secrets.token_urlsafe(32), nx=True)
        value = await redis.get(keys.system_key)
    if value is None:
        raise RuntimeError(f"the store lost {keys.system_key} while the silo read it")
    return value.decode() if isinstance(value, bytes) else str(value)
