"""No call waits out its deadline because a silo joined or left gracefully.

While a silo joins, or leaves after SIGTERM (NOT_SERVING, out of the ring, retry-safe
refusals, drain), many calls run at once over the multiplexed call stream: direct calls
and grain-to-grain calls, every one of them activating its grain and deactivating it
again (the soak grains), so calls keep landing on the moving silo. Each call must end in
a success or in a non-deadline error. The deadline is far longer than a drain, so a
DeadlineExceededError can only mean a call sat waiting for the whole of it (a stream that
ended without answering, a wait for an activation that never went away, a retry loop on
a stale membership...). No wall-clock bounds: the outcome says it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator

import pytest

from grainery.client import DeadlineExceededError, GrainClient, GrainError, InnerCallError
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.eventually import eventually

pytestmark = pytest.mark.timeout(300)

GRAINS = ["tests.grains.soak"]
KEYS = [f"lj-{i}" for i in range(200)]
# Relays go from one half of the keys to the other: no grain-to-grain call targets its
# caller or closes a cycle (A -> B -> A), which without reentrancy waits until the deadline
# by design (README, turn-based) and is not what this tests.
RELAYING, RELAYED = KEYS[:100], KEYS[100:]
WORKERS = 48
DEADLINE = 60.0  # seconds; a drain here takes about one
AFTER = 300  # calls that must complete after the join or leave, to cover its aftermath
REFUSED = {"unavailable", "overloaded", "placement_unavailable"}  # retry-safe refusals


@pytest.fixture
def cluster(store: TestStore) -> Iterator[TestCluster]:
    with TestCluster(store, GRAINS, size=2) as running:
        yield running


class Load:
    """WORKERS callers in a loop over one client (so over one call stream per silo); half
    the calls are grain-to-grain (a relay to another key), half direct."""

    def __init__(self, client: GrainClient) -> None:
        self.outcomes: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()  # silo address -> successful calls served there
        self.failures: list[str] = []  # calls that waited out their deadline
        self.unretried: list[str] = []  # grain-to-grain calls failed by a retry-safe refusal
        self._stop = False
        self._tasks = [asyncio.create_task(self._worker(client)) for _ in range(WORKERS)]

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    async def _worker(self, client: GrainClient) -> None:
        while not self._stop:
            relay = random.random() < 0.5
            kind = "relay" if relay else "touch"
            key = random.choice(RELAYING if relay else KEYS)
            grain = client.get_grain("Churn", key)
            try:
                if relay:
                    await grain.relay(random.choice(RELAYED), timeout=DEADLINE)
                else:
                    await grain.touch(1, timeout=DEADLINE)
                self.outcomes[f"{kind}: ok"] += 1
            except GrainError as error:
                self.outcomes[f"{kind}: {type(error).__name__}"] += 1
                if isinstance(error, DeadlineExceededError):
                    self.failures.append(f"{kind} {key}: {error.message}")
                if isinstance(error, InnerCallError) and error.inner_kind in REFUSED:
                    self.unretried.append(f"{kind} {key}: {error.message}")

    async def stop(self) -> None:
        self._stop = True
        await asyncio.gather(*self._tasks)


async def _served_calls(silo: SiloProcess) -> bool:
    """True once ``silo`` has run grain calls itself (so streams and grains are on it)."""
    metrics = await asyncio.to_thread(silo.scrape)
    return any(name.startswith("grainery_calls_total") and 'outcome="ok"' in name and value
               for name, value in metrics.items())


async def _settle(load: Load, what: str) -> None:
    """Wait until AFTER more calls have ended (whatever their outcome)."""
    target = load.done + AFTER

    async def reached() -> bool:
        return load.done >= target

    await eventually(reached, DEADLINE * 2, f"{AFTER} calls after {what}")


def _verdict(load: Load) -> None:
    print(f"outcomes: {dict(load.outcomes)}")
    assert not load.failures, (
        f"{len(load.failures)} call(s) waited out their whole {DEADLINE:.0f}s deadline; "
        f"outcomes {dict(load.outcomes)}; first: {load.failures[:5]}"
    )
    # A refusal before the inner call ran (the silo is leaving) is retried on the new
    # owner within the deadline; it never fails the relaying grain's turn.
    assert not load.unretried, (
        f"{len(load.unretried)} relay(s) failed on a retry-safe refusal of their inner call; "
        f"first: {load.unretried[:5]}"
    )
    assert load.outcomes["touch: ok"] and load.outcomes["relay: ok"], dict(load.outcomes)


async def test_calls_while_a_silo_leaves_gracefully_never_wait_out_their_deadline(
    cluster: TestCluster,
) -> None:
    leaver = await asyncio.to_thread(cluster.add_silo)
    await cluster.wait_for_stable_membership(3)
    async with cluster.client(refresh_interval=0.5) as client:
        await client.wait_for_members(3)
        load = Load(client)
        try:
            await eventually(lambda: _served_calls(leaver), 30, f"{leaver.name} serving calls")
            code = await asyncio.to_thread(leaver.stop)  # SIGTERM, then wait for the exit
            cluster.silos.remove(leaver)
            assert code == 0, leaver.log_tail()
            await _settle(load, f"{leaver.name} left")
        finally:
            await load.stop()
    _verdict(load)


async def test_calls_while_a_silo_joins_never_wait_out_their_deadline(
    cluster: TestCluster,
) -> None:
    async with cluster.client(refresh_interval=0.5) as client:
        await client.wait_for_members(2)
        load = Load(client)
        try:
            await _settle(load, "the load started")
            joiner = await asyncio.to_thread(cluster.add_silo)
            await cluster.wait_for_stable_membership(3)
            await eventually(lambda: _served_calls(joiner), 30, f"{joiner.name} serving calls")
            await _settle(load, f"{joiner.name} joined")
        finally:
            await load.stop()
    _verdict(load)
