"""Soak: a silo under churn keeps its memory, file descriptors and asyncio tasks flat.

Churn: clients call grains continuously (every call activates its grain and deactivates it
again; half go grain-to-grain across silos), from one long-lived client and from clients
that connect, make a few calls and disconnect, while a third silo joins and leaves again
and again (a new address each time, so channels open and close); no call may wait out its
deadline because of that churn. Every few seconds, with the calls paused, the test samples
the observed silo's RSS and open fds (from /proc) and its asyncio task count
(Management.SiloStats.tasks). The second quarter of the run (after warm-up) is compared
with the last quarter; growth beyond a tolerance fails the test.

It can fail: ``GRAINERY_SOAK_LEAK=tasks`` (or ``memory``, ``fds``) makes the soak grains
leak one of those per call, and the test then fails on that measure.

Selected with ``-m soak``; ``GRAINERY_SOAK_SECONDS`` sets the churn time (default 100).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from grainery.client import GrainClient, GrainError
from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ChannelPool
from grainery.silo.testing import SiloProcess, TestCluster, TestStore

pytestmark = [pytest.mark.soak, pytest.mark.timeout(400)]

SOAK_SECONDS = float(os.environ.get("GRAINERY_SOAK_SECONDS", "100"))
LEAK = os.environ.get("GRAINERY_SOAK_LEAK", "")
GRAINS = ["tests.grains.soak"]
KEYS = [f"soak-{i}" for i in range(400)]
RELAYING, RELAYED = KEYS[:200], KEYS[200:]  # disjoint: see _one_call
SAMPLE_EVERY = 2.0  # seconds
# Windows: the second quarter of the run (after warm-up) against the last quarter.

# Tolerances for "flat": how much the late window may exceed the early one (see grown()).
RSS_TOLERANCE = (1.10, 8 * 1024 * 1024)  # factor, plus bytes
FD_TOLERANCE = 8  # a pooled store connection or two more is not a leak
# Tasks that come and go with the churn even in a quiet sample: a peer's call stream (its
# reader and running calls) and, for a moment after each view change, the stream pump's
# takeovers of the partitions the ring hands this silo (one task per partition, up to a
# third of 32, waiting for the leaving silo's lease). A leak of one task per call (the
# GRAINERY_SOAK_LEAK=tasks run) adds tens of thousands.
TASK_TOLERANCE = 16


@dataclass(frozen=True)
class Sample:
    rss: int
    fds: int
    tasks: int


@pytest.fixture
def cluster(store: TestStore) -> Iterator[TestCluster]:
    env = {"GRAINERY_SOAK_LEAK": LEAK} if LEAK else {}
    with TestCluster(store, GRAINS, size=2, env=env) as running:
        yield running


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def _sample(silo: SiloProcess, pool: ChannelPool) -> Sample:
    assert silo.process is not None
    stats = await pool.get(silo.address).management.SiloStats(
        pb.SiloStatsRequest(), timeout=5.0
    )
    pid = silo.process.pid
    return Sample(_rss(pid), len(os.listdir(f"/proc/{pid}/fd")), stats.tasks)


class Load:
    """Calls from one long-lived client and from short-lived ones (connect, a few calls,
    disconnect, again), paused while the test samples so samples see a quiet silo."""

    def __init__(self, cluster: TestCluster, client: GrainClient) -> None:
        self.cluster = cluster
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.slowest = 0.0
        self.running = asyncio.Event()
        self.running.set()
        self._stop = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = [asyncio.create_task(self._calls(client)) for _ in range(6)]
        self._tasks += [asyncio.create_task(self._short_lived()) for _ in range(2)]

    async def _calls(self, client: GrainClient, count: int | None = None) -> None:
        made = 0
        while not self._stop and (count is None or made < count):
            await self.running.wait()
            if self._stop:
                return
            self._busy += 1
            self._idle.clear()
            started = asyncio.get_running_loop().time()
            kind = random.choice(("touch", "relay"))
            try:
                await _one_call(client, kind)
                self.calls += 1
            except GrainError as error:  # a silo leaving mid-call: the soak measures resources
                self.errors[f"{kind}: {type(error).__name__}"] += 1
            finally:
                self.slowest = max(self.slowest, asyncio.get_running_loop().time() - started)
                self._busy -= 1
                made += 1
                if not self._busy:
                    self._idle.set()

    async def _short_lived(self) -> None:
        while not self._stop:
            await self.running.wait()
            async with self.cluster.client(refresh_interval=0.5) as client:
                await self._calls(client, count=20)

    async def pause(self) -> bool:
        """Stop starting calls; True once none is in flight (False if some still are after
        a few seconds, e.g. waiting out a silo that is leaving: sampled anyway)."""
        self.running.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), 1.0)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stop = True
        self.running.set()
        await asyncio.gather(*self._tasks)


async def _one_call(client: GrainClient, kind: str) -> None:
    if kind == "touch":
        await client.get_grain("Churn", random.choice(KEYS)).touch(1, timeout=10)
    else:
        # Relays go from one half of the keys to the other, so no grain-to-grain call ever
        # targets its caller or closes a cycle (A -> B -> A): without reentrancy those wait
        # until the deadline by design (README, turn-based), whatever the churn.
        await client.get_grain("Churn", random.choice(RELAYING)).relay(
            random.choice(RELAYED), timeout=10
        )


async def _join_and_leave(cluster: TestCluster, stop: asyncio.Event) -> int:
    """A third silo joins and leaves again (a new address each time), until ``stop``."""
    cycles = 0
    while not stop.is_set():
        joiner = await asyncio.to_thread(cluster.add_silo)
        await cluster.wait_for_stable_membership(3)
        await asyncio.sleep(1.0)  # the load: grains placed on it, channels to it in use
        await asyncio.to_thread(joiner.stop)
        cluster.silos.remove(joiner)
        await cluster.wait_for_stable_membership(2)
        cycles += 1
    return cycles


def grown(early: list[Sample], late: list[Sample]) -> list[str]:
    """The measures that grew beyond tolerance from the ``early`` to the ``late`` window.

    RSS compares medians; fds and tasks compare each window's quietest sample (its
    minimum), because a call still in flight when a sample is taken adds a few of both,
    while a leak raises even the quietest sample."""
    grew = []
    rss_early = statistics.median(s.rss for s in early)
    rss_late = statistics.median(s.rss for s in late)
    if rss_late > rss_early * RSS_TOLERANCE[0] + RSS_TOLERANCE[1]:
        grew.append(f"RSS {rss_early / 2**20:.1f} MiB -> {rss_late / 2**20:.1f} MiB")
    fds_early, fds_late = min(s.fds for s in early), min(s.fds for s in late)
    if fds_late > fds_early + FD_TOLERANCE:
        grew.append(f"open fds {fds_early} -> {fds_late}")
    tasks_early, tasks_late = min(s.tasks for s in early), min(s.tasks for s in late)
    if tasks_late > tasks_early + TASK_TOLERANCE:
        grew.append(f"asyncio tasks {tasks_early} -> {tasks_late}")
    return grew


async def test_a_silo_under_churn_stays_flat(cluster: TestCluster) -> None:
    await cluster.wait_for_stable_membership(2)
    observed = cluster.silos[0]
    stats_pool = ChannelPool(cluster.security, 4 * 1024 * 1024)
    samples: list[tuple[float, Sample]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop_churn = asyncio.Event()
    quiet = 0
    async with cluster.client(refresh_interval=0.5) as client:
        load = Load(cluster, client)
        churn = asyncio.create_task(_join_and_leave(cluster, stop_churn))
        try:
            while loop.time() - started < SOAK_SECONDS and not churn.done():
                await asyncio.sleep(SAMPLE_EVERY)  # the load runs meanwhile
                quiet += await load.pause()
                samples.append((loop.time() - started, await _sample(observed, stats_pool)))
                load.running.set()
        finally:
            stop_churn.set()
            await load.stop()
            cycles = await churn
            await stats_pool.close()
        # The long-lived client keeps channels only to silos still in the membership.
        departed = set(client.pool.addresses) - {s.address for s in cluster.live}
    print(f"soak: {cycles} join/leave cycles, {load.calls} calls, failed: {dict(load.errors)}, "
          f"slowest {load.slowest:.1f}s; {quiet} of {len(samples)} samples with no call in "
          f"flight:")
    for at, s in samples:
        print(f"  {at:6.1f}s rss={s.rss / 2**20:7.1f} MiB fds={s.fds:4d} tasks={s.tasks:4d}")
    assert load.calls > 0 and cycles > 0, "no load or no silo churn happened"
    assert not departed, f"the client still holds channels to departed silos: {departed}"
    # A silo joining or leaving gracefully makes a call succeed (after a retry-safe refusal)
    # or fail fast; none may sit out its whole deadline.
    waited = {kind: n for kind, n in load.errors.items() if "DeadlineExceeded" in kind}
    assert not waited, f"calls waited out their 10 s deadline under churn: {waited}"
    quarter = SOAK_SECONDS / 4
    early = [s for at, s in samples if quarter <= at < 2 * quarter]
    late = [s for at, s in samples if at >= 3 * quarter]
    assert len(early) >= 3 and len(late) >= 3, f"too few samples: {len(samples)}"
    grew = grown(early, late)
    assert not grew, f"grew under churn: {'; '.join(grew)} (samples above)"
