"""Chaos: kill -9, SIGSTOP past the lease, graceful restarts, joins, store restarts and a
partition from the store, mixed by a seeded schedule under many concurrent writers; then
the guarantees, checked op by op.

1. every acknowledged op is stored (read through a fresh client and straight from Redis);
2. no op is stored twice;
3. no op reported as not run (retry-safe) or not applied (stale_state/fenced) is stored;
4. every grain accepts a write within RECOVERY_BOUND seconds after the faults stop, and
   once the membership is stable again, a burst of concurrent writes to every grain (each
   sent once) is acknowledged in full;
5. no two activations of a grain served at once (seen from the caller's side).

GRAINERY_CHAOS_SECONDS (default 35: the short run in ``make test``; ``make chaos`` runs
240), GRAINERY_CHAOS_SILOS (default 3, or 5 for runs over a minute) and
GRAINERY_CHAOS_SEED (replay a run's schedule; printed by every run).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from grainery.client import GrainClient
from grainery.client.routing import GrainId
from grainery.silo.storage.keys import KeySpace
from grainery.silo.testing import TestStore
from tests.chaos.checks import Violation, check_settled, check_single_activation, check_stored
from tests.chaos.cluster import ChaosCluster
from tests.chaos.faults import FaultDriver
from tests.chaos.ledger import Ledger, Outcome
from tests.chaos.load import (
    GRAIN_TYPE,
    ChaosLoad,
    burst,
    read_through_client,
    wait_writable,
)
from tests.eventually import eventually
from tests.grains.chaos_probes import events_key

SECONDS = float(os.environ.get("GRAINERY_CHAOS_SECONDS", "35"))
LONG = SECONDS > 60
SILOS = int(os.environ.get("GRAINERY_CHAOS_SILOS", "5" if LONG else "3"))
GRAINS = 40 if LONG else 16
WRITERS = 32 if LONG else 16
LEASE = 4.0  # the silos' default membership lease (README, guarantee 4)
RECOVERY_BOUND = 30.0  # check 4: seconds after the faults stop
CALL_TIMEOUT = 8.0
BURST = 4  # check 4: concurrent appends per grain once the cluster is quiet again
QUIET = 12.0  # check 4: seconds without calls before the burst
MAX_LISTED = 40  # violations spelled out in the failure message
NOT_WRITABLE = "4 grain not writable again"
BURST_FAILED = "4 write failed in a quiet cluster after the faults"


def chaos_seed() -> int:
    raw = os.environ.get("GRAINERY_CHAOS_SEED", "").strip()
    return int(raw) if raw else random.SystemRandom().randrange(1, 1_000_000)


@pytest.mark.timeout(SECONDS + 240)
async def test_mixed_faults_under_load_keep_every_guarantee(tmp_path: Path) -> None:
    seed = chaos_seed()
    print(f"\nchaos seed {seed}: {SILOS} silos, {SECONDS:.0f}s of faults "
          f"(replay: GRAINERY_CHAOS_SEED={seed})", flush=True)
    (tmp_path / "store").mkdir()
    store = TestStore(appendonly=True, data_dir=str(tmp_path / "store")).start()
    chaos = ChaosCluster(store, SILOS, proxied=1 if SILOS <= 3 else 2)
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    ledger = Ledger()
    driver = FaultDriver(chaos, seed, LEASE, clock)
    keys = [f"g{i:02d}" for i in range(GRAINS)]
    violations: list[Violation] = []
    try:
        await asyncio.to_thread(chaos.start)
        await chaos.cluster.wait_for_stable_membership(SILOS)
        async with chaos.cluster.client(refresh_interval=0.5, timeout=CALL_TIMEOUT) as client:
            # Warm-up: one burst before the faults, so the silos' store connection pools hold
            # more connections than the steady load keeps busy (the burst at the end needs them).
            warm = await burst(client, ledger, clock, keys, BURST, CALL_TIMEOUT)
            assert all(op.outcome is Outcome.ACKED for op in warm), [
                op.label() for op in warm if op.outcome is not Outcome.ACKED][:5]
            load = ChaosLoad(client, ledger, clock, keys, WRITERS, seed, CALL_TIMEOUT).start()
            await driver.run(SECONDS)
            writable = await asyncio.gather(
                *(wait_writable(client, ledger, clock, key, RECOVERY_BOUND) for key in keys),
                return_exceptions=True,
            )
            await load.stop()
            for key, outcome in zip(keys, writable, strict=True):
                if isinstance(outcome, AssertionError):
                    violations.append(Violation(NOT_WRITABLE, key, str(outcome)))
                elif isinstance(outcome, BaseException):
                    raise outcome
            try:
                await chaos.cluster.wait_for_stable_membership(timeout=RECOVERY_BOUND)
            except TimeoutError as exc:
                violations.append(Violation(NOT_WRITABLE, "*", str(exc)))
            # A quiet spell before the burst, as callers that come back later see it: longer
            # than a silo's idle-connection health check (10 s), shorter than any timeout.
            await asyncio.sleep(QUIET)
            for op in await burst(client, ledger, clock, keys, BURST, CALL_TIMEOUT):
                if op.outcome is not Outcome.ACKED:
                    violations.append(Violation(BURST_FAILED, op.grain, op.label()))
        stored = await _stored_lists(chaos, ledger, clock, keys)
    finally:
        await asyncio.to_thread(chaos.stop)
        store.stop()
    violations += check_settled(ledger)
    for key in keys:
        for view, lists in stored.items():
            violations += check_stored(ledger, key, lists[key], view)
        violations += check_single_activation(ledger, key)
    report = _report(seed, driver, ledger, violations)
    print(report)
    if violations:
        report += await _events_of(store, violations)
    assert not violations, report


async def _stored_lists(
    chaos: ChaosCluster, ledger: Ledger, clock: Callable[[], float], keys: list[str]
) -> dict[str, dict[str, list[str]]]:
    """Each grain's list, read through a fresh client and straight from Redis."""
    views: dict[str, dict[str, list[str]]] = {"a fresh client": {}, "Redis": {}}
    async with GrainClient(chaos.cluster.addresses, timeout=CALL_TIMEOUT) as fresh:
        for key in keys:
            views["a fresh client"][key] = await read_through_client(
                fresh, ledger, clock, key, RECOVERY_BOUND
            )
    redis = aioredis.Redis.from_url(chaos.store.url)
    space = KeySpace(chaos.cluster.cluster)
    try:
        for key in keys:
            raw = await redis.hget(space.state(GrainId(GRAIN_TYPE, key)), "data")
            views["Redis"][key] = [str(op) for op in orjson.loads(raw).get("ops", [])] \
                if raw else []
    finally:
        await redis.aclose()
    return views


def _report(seed: int, driver: FaultDriver, ledger: Ledger, violations: list[Violation]) -> str:
    lines = [f"chaos seed {seed} (replay: GRAINERY_CHAOS_SEED={seed} make chaos, or "
             f"GRAINERY_CHAOS_SEED={seed} pytest tests/chaos)", "faults:", *driver.log,
             ledger.summary()]
    if violations:
        lines.append(f"{len(violations)} violations:")
        lines += [str(v) for v in violations[:MAX_LISTED]]
        if len(violations) > MAX_LISTED:
            lines.append(f"... and {len(violations) - MAX_LISTED} more")
    return "\n".join(lines)


async def _events_of(store: TestStore, violations: list[Violation]) -> str:
    """Activation events of the grains that failed a check (the store is stopped: restart
    it on its AOF to read them). Only an aid: if they cannot be read, say so and go on."""
    grains = sorted({v.grain for v in violations})[:10]
    store.start()
    redis = aioredis.Redis.from_url(store.url, decode_responses=True)

    async def read() -> list[str]:
        lines = ["activation events (silo, activation) of the failing grains:"]
        for key in grains:  # raises while the store is still loading its AOF
            events = await redis.lrange(events_key(key), 0, -1)
            lines.append(f"  ChaosProbe/{key}: {events[-12:]}")
        return lines

    try:
        lines = await eventually(read, 20, "the restarted store answering")
        return "\n" + "\n".join(lines)
    except AssertionError as exc:
        return f"\n(activation events not available: {exc})"
    finally:
        await redis.aclose()
        store.stop()
