"""Grain timers through a real silo: a timer's ticks land in the store while the grain is
active and stop once it deactivates (asked to, or collected as idle although its timer kept
ticking). "Stopped" is proved against a witness grain whose timer keeps ticking: once it
ticked several more times, the stopped grain's stored count has not moved. In process:
tests/unit/test_timers.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from grainery.client import GrainClient
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually

GRAINS = ["tests.grains.timer_probes"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    with TestCluster(store, GRAINS, size=1) as running:
        yield running


@pytest.fixture
async def client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    for silo in cluster.silos:
        assert silo.alive, f"silo {silo.name} died:\n{silo.log_tail()}"
    async with cluster.client() as connected:
        yield connected


async def ticks_at_least(grain: Any, count: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        report: dict[str, Any] = await grain.report()
        return report if report.get("ticks", 0) >= count else None

    result: dict[str, Any] = await eventually(check, 20, f"{count} ticks of {grain}")
    return result


async def stopped(grain: Any, reason: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        report: dict[str, Any] = await grain.report()
        return report if report.get("reason") == reason else None

    result: dict[str, Any] = await eventually(check, 20, f"{grain} deactivated ({reason})")
    return result


async def test_a_timer_ticks_while_active_and_stops_when_the_grain_leaves(
    client: GrainClient, cluster: TestCluster
) -> None:
    grain = client.get_grain("TimerProbe", unique("timer"))
    witness = client.get_grain("TimerProbe", unique("witness"))
    await witness.start(0.05)
    await grain.start(0.05)
    await ticks_at_least(grain, 3)
    await grain.leave()
    report = await stopped(grain, "requested")
    seen = (await witness.report())["ticks"]
    await ticks_at_least(witness, seen + 5)
    final = await grain.report()  # a new activation: it reports the store, starts no timer
    assert final["ticks"] == report["stopped_at"] >= 3, final
    assert cluster.silos[0].scrape().get(
        'grainery_timer_ticks_total{grain_type="TimerProbe",outcome="ok"}', 0
    ) >= 3


async def test_ticks_do_not_keep_a_grain_from_being_collected_as_idle(
    client: GrainClient, cluster: TestCluster
) -> None:
    grain = client.get_grain("IdleTimerProbe", unique("idle"))
    witness = client.get_grain("TimerProbe", unique("witness"))
    await witness.start(0.05)
    await grain.start(0.05)

    async def collected() -> bool:  # watched from the metrics: a call would be activity
        samples = cluster.silos[0].scrape()
        return samples.get(
            'grainery_deactivations_total{grain_type="IdleTimerProbe",reason="idle"}', 0
        ) >= 1

    await eventually(collected, 20, "the ticking grain collected as idle")
    report = await stopped(grain, "idle")
    assert report["stopped_at"] >= 1, report
    seen = (await witness.report())["ticks"]
    await ticks_at_least(witness, seen + 5)
    assert (await grain.report())["ticks"] == report["stopped_at"]
