"""Background sweep of the directory entries that dead silos left behind.

A silo killed with -9 never unregisters its grains; a takeover would overwrite
each entry on the grain's next call, but a grain never called again would keep
its entry forever. Every silo therefore looks, every few heartbeats, at the
incarnations that have registered grains (one small set, never a keyspace scan)
and sweeps those the membership declared dead (or no longer lists: dead rows are
pruned, and a dead incarnation never comes back). Sweeping is idempotent, so
several silos doing it at once only repeat work.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from grainery.client.errors import GrainError
from grainery.silo.cluster.view import MembershipView
from grainery.silo.storage.protocols import GrainDirectory

log = logging.getLogger("grainery.sweeper")


class DirectorySweeper:
    def __init__(
        self, directory: GrainDirectory, membership: MembershipView, interval: float
    ) -> None:
        self._directory = directory
        self._membership = membership
        self.interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                swept = await self.sweep_once()
            except (RedisError, OSError, GrainError) as exc:
                log.warning("directory sweep failed: %s", type(exc).__name__)
                continue
            if swept:
                log.info("swept %d directory entries of dead silos", swept)

    async def sweep_once(self) -> int:
        """Sweep every registrant the membership says is dead; returns entries removed."""
        membership = self._membership
        if not membership.serving:
            return 0  # a fenced silo's view of the membership is not to be acted on
        registrants = await self._directory.registrants()
        if any(membership.is_alive(inc) is None for inc in registrants):
            await membership.refresh()
        swept = 0
        for incarnation in registrants:
            if not membership.is_alive(incarnation):  # False (dead) or None (pruned: dead)
                swept += await self._directory.sweep(incarnation)
        return swept
