"""The reminder service of one silo: fire the due reminders of the partitions it owns.

Loop (every POLL_INTERVAL, or at once again after a full batch):
1. one command asks which partitions have anything due (``heads``); the silo keeps those it
   owns on the ring (silo/cluster/partitions.py): no scan, and the idle cost does not grow
   with the number of reminders;
2. one pipelined round trip claims the due ticks of those partitions (CLAIM, atomic per
   partition: only a tick still due is claimed, its score moves to a claim deadline and the
   claim records this incarnation and the tick's scheduled time);
3. each claimed tick is delivered as a system call (silo/system_calls.py) to the grain's hook,
   wherever the grain lives (activating it), then completed (COMPLETE: advance to the next
   period on the original phase, or retry later if it could not run).

Two silos that both think they own a partition (a join seen by one before the other) both
poll it; CLAIM lets only one of them take each tick. A tick claimed by a silo that died is
released by the partition's owner as soon as its view says that incarnation is dead
(RELEASE_DEAD), or taken by anyone once the claim deadline passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from grainery.client.errors import (
    DeadlineExceededError,
    GrainApplicationError,
    GrainError,
    UnknownGrainTypeError,
    UnknownMethodError,
)
from grainery.client.tasks import spawn
from grainery.silo import tracing
from grainery.silo.cluster.partitions import PartitionOwnership
from grainery.silo.cluster.view import MembershipView
from grainery.silo.failures import FailureLog
from grainery.silo.metrics import SiloMetrics
from grainery.silo.reminders.model import (
    MAX_UNDELIVERABLE,
    RUNTIME_PREFIX,
    ReminderTick,
    parse_member,
    retry_delay_ms,
)
from grainery.silo.reminders.store import Claimed, ReminderStore
from grainery.silo.system_calls import SystemCalls

log = logging.getLogger("grainery.reminders")

POLL_INTERVAL = 0.1  # seconds between looks for due partitions (accuracy: see the README)
DELIVERY_TIMEOUT = 10.0  # seconds a tick's hook may take (queueing included)
CLAIM_LEASE = 15.0  # seconds before another silo may take a claimed tick (> DELIVERY_TIMEOUT)
MAX_IN_FLIGHT = 2000  # ticks being delivered by one silo at once
CLAIM_BATCH = 200  # ticks claimed per partition per poll
STORE_RETRY = 1.0  # seconds to wait after the store failed

HOOK = "receive_reminder"
RUNTIME_HOOK = "on_runtime_reminder"

# Ticks that could not be delivered or raised: logged with the reason, at a bounded rate.
REMINDER_FAILURES = FailureLog(log)


def outcome_of(error: BaseException) -> str:
    """How a failed delivery is completed: "undeliverable" (no such type, hook or runtime
    handler: retrying cannot help), "failed" (the hook ran and raised: the tick happened, not
    retried) or "retry" (it did not run, or may not have: tried again after a backoff)."""
    if isinstance(error, (UnknownGrainTypeError, UnknownMethodError)):
        return "undeliverable"
    if isinstance(error, GrainApplicationError):
        if error.error_type == "UnknownRuntimeReminderError":
            return "undeliverable"
        return "failed"
    return "retry"


class ReminderService:
    def __init__(
        self,
        store: ReminderStore,
        membership: MembershipView,
        system_calls: SystemCalls,
        metrics: SiloMetrics,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.store = store
        self.membership = membership
        self.ownership = PartitionOwnership("reminders", store.partitions, membership)
        self._calls = system_calls
        self._metrics = metrics
        self.poll_interval = poll_interval
        self._loop_task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._claiming = False
        self._dead_check: asyncio.Task[None] | None = None
        self.ownership.on_change(self._owned_changed)

    # ----- lifecycle ------------------------------------------------------
    def start(self) -> None:
        self._claiming = True
        self.membership_changed()
        self._loop_task = spawn(self._run(), name="grainery-reminders")

    def pause(self) -> None:
        """Stop claiming (graceful stop): ticks in flight still finish and complete."""
        self._claiming = False
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming, wait up to ``timeout`` for ticks in flight; the rest are cancelled
        and their claims expire (CLAIM_LEASE), after which the partition's owner fires them."""
        self.pause()
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=max(0.0, timeout))
        for task in (self._loop_task, self._dead_check, *self._deliveries):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._loop_task, self._dead_check, *self._deliveries) if t is not None),
            return_exceptions=True,
        )

    # ----- ownership ------------------------------------------------------
    def membership_changed(self, *_: object) -> None:
        """On every view change, fencing and rejoin: recompute the owned partitions, and
        release ticks that silos now known dead had claimed in them."""
        self.ownership.update()
        if not self._claiming:
            return  # stopping (or not started): nothing more to fire here
        if self.ownership.owned and (self._dead_check is None or self._dead_check.done()):
            self._dead_check = spawn(self._release_dead_claims(), name="grainery-reminder-dead")

    def _owned_changed(self, gained: frozenset[int], lost: frozenset[int]) -> None:
        self._metrics.reminder_partitions.set(len(self.ownership.owned))
        if gained:
            self._wake.set()

    async def _release_dead_claims(self) -> None:
        try:
            claims = await self.store.claims_in(sorted(self.ownership.owned))
            for partition, held in claims.items():
                for member, holder in held.items():
                    if self.membership.is_alive(holder) is False:
                        await self.store.release_dead(partition, member, holder)
        except RedisError as exc:
            log.warning("could not check reminder claims of dead silos: %s", exc)

    # ----- the loop -------------------------------------------------------
    async def _run(self) -> None:
        failing = False
        while self._claiming:
            full = False
            try:
                full = await self._poll()
                if failing:
                    log.info("reminder polls succeed again")
                failing = False
            except RedisError as exc:
                if not failing:  # once per outage, not once per retry
                    log.warning("reminder poll failed (%s); retrying every %.0fs until the "
                                "store answers", exc, STORE_RETRY)
                failing = True
                await asyncio.sleep(STORE_RETRY)
            except Exception:  # noqa: BLE001 - a bug here must not stop this silo's reminders
                log.exception("reminder poll failed unexpectedly; retrying in %.0fs",
                              STORE_RETRY)
                await asyncio.sleep(STORE_RETRY)
            if full or not self._claiming:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def _poll(self) -> bool:
        """One round: returns True when a batch was full (poll again at once)."""
        owned = self.ownership.owned
        room = MAX_IN_FLIGHT - len(self._deliveries)
        if not owned or room <= 0 or not self.membership.serving:
            return False
        mine = [p for p in await self.store.due_partitions() if p in owned]
        if not mine:
            return False
        limit = max(1, min(CLAIM_BATCH, room // len(mine)))
        claimed = await self.store.claim(
            mine, self.membership.incarnation, round(CLAIM_LEASE * 1000), limit
        )
        per_partition: dict[int, int] = {}
        for tick in claimed:
            per_partition[tick.partition] = per_partition.get(tick.partition, 0) + 1
            spawn(self._deliver(tick, self.membership.incarnation), owner=self._deliveries)
        # A full batch in some partition: more may be due there; look again at once.
        return max(per_partition.values(), default=0) >= limit \
            and len(self._deliveries) < MAX_IN_FLIGHT

    async def _deliver(self, claimed: Claimed, incarnation: str) -> None:
        grain_type, key, name = parse_member(claimed.member)
        now = time.time()
        tick = ReminderTick(claimed.scheduled, now, claimed.period_ms / 1000)
        hook = RUNTIME_HOOK if name.startswith(RUNTIME_PREFIX) else HOOK
        self._metrics.reminder_lateness.labels(grain_type).observe(max(0.0, tick.lateness))
        reason = ""
        try:
            # The tick's dispatch (and the turn) nest under this span when tracing is on.
            with tracing.span("grainery.reminder.tick", "internal", {
                "grainery.grain_type": grain_type, "grainery.reminder": name,
                "grainery.reminder.lateness_ms": round(tick.lateness * 1000),
            } if tracing.enabled() else None):
                await self._calls.call(grain_type, key, hook, [name, tick.to_json()],
                                       DELIVERY_TIMEOUT)
            outcome = "ok"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is counted and completed
            outcome = outcome_of(exc)
            reason = f"{type(exc).__name__}: {getattr(exc, 'message', str(exc))}"
            self._report(grain_type, key, name, outcome, claimed.attempt, exc)
        retry = retry_delay_ms(claimed.attempt, claimed.period_ms) if outcome == "retry" else 0
        try:
            result = await self.store.complete(claimed, incarnation, outcome, retry, reason)
        except RedisError as exc:
            # The claim stays: it expires after CLAIM_LEASE and the tick is fired again.
            log.warning("could not complete reminder %s of %s/%s: %s", name, grain_type, key, exc)
            result = "unknown"
        if result == "disabled":
            log.error(
                "reminder %r of %s/%s disabled after %d undeliverable ticks (%s); register it "
                "again once the grain type and its hook are deployed",
                name, grain_type, key, MAX_UNDELIVERABLE, reason,
            )
            self._metrics.reminder_ticks.labels(grain_type, "disabled").inc()
        self._metrics.reminder_ticks.labels(
            grain_type, "retried" if outcome == "retry" else outcome
        ).inc()

    def _report(
        self, grain_type: str, key: str, name: str, outcome: str, attempt: int,
        exc: BaseException,
    ) -> None:
        what = {
            "undeliverable": "could not be delivered (no such grain type, hook or handler)",
            "failed": "raised in its hook; not retried, the next tick comes at the next period",
            "retry": f"did not run (attempt {attempt}); it will be retried",
        }[outcome]
        message = (f"reminder {name!r} of {grain_type}/{key} {what}: {type(exc).__name__}: "
                   f"{getattr(exc, 'message', str(exc))[:300]}")
        if isinstance(exc, (GrainError, DeadlineExceededError)) and outcome != "failed":
            # No traceback worth showing: the reason is the whole story.
            REMINDER_FAILURES.report(grain_type, exc.with_traceback(None), message)
        else:
            REMINDER_FAILURES.report(grain_type, exc, message)
