"""The lease keeper: renews this silo's membership lease on a thread of its own.

Why a thread: grain code runs on the event loop, and one grain that blocks it
(a synchronous LLM SDK, a CPU-bound step) must not make the silo miss its
renewals and fence itself. The thread has its own synchronous Redis
connection, so nothing it does waits for the loop. It only *reports* to the
membership service (lease renewed, fenced, a fresh membership read); the
service hands every change to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import redis
from redis.exceptions import RedisError

from grainery.silo.cluster import membership_scripts as scripts

if TYPE_CHECKING:
    from grainery.silo.cluster.membership import MembershipService

log = logging.getLogger("grainery.membership")


class HeartbeatThread:
    """Every heartbeat interval: renew the lease, then read the membership (failure detection).

    The connection's socket timeout is one heartbeat interval, so a silo cut off
    from Redis notices its lapsed lease on time rather than after a TCP timeout.
    """

    def __init__(self, membership: MembershipService, client: redis.Redis) -> None:
        self._membership = membership
        self._client = client
        self._renew = client.register_script(scripts.RENEW)
        self._read = client.register_script(scripts.READ)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"grainery-heartbeat-{membership.silo_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Bounded: a renewal stuck on a dead socket ends at its socket timeout anyway."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        interval = self._membership.timing.heartbeat_interval
        while not self._stopping.wait(interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - the lease keeper must never die silently
                log.exception("membership heartbeat failed unexpectedly")

    def beat(self) -> None:
        membership = self._membership
        incarnation, lease_ms = membership.incarnation, membership.lease_ms()
        if not membership.holds_lease(incarnation):
            return  # joining, fenced (the loop rejoins) or left
        keys = membership.script_keys()
        try:
            sent = time.monotonic()
            verdict, _version = self._renew(keys=keys, args=[incarnation, lease_ms, ""])
            if _text(verdict) != "ok":
                membership.fence(incarnation, "the cluster declared this silo dead")
                return
            membership.lease_renewed(incarnation, sent)
            # Reading also declares lapsed leases dead: this is failure detection.
            reply = self._read(keys=keys, args=[membership.retention_ms()])
            membership.adopt_threadsafe(list(reply))
        except (RedisError, OSError) as exc:
            log.warning("membership heartbeat failed: %s", type(exc).__name__)
        if membership.lease_lapsed(incarnation):
            membership.fence(incarnation, "lease could not be renewed in time")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
