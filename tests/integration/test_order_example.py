"""The README's order-tracking agent runs as written against a real silo (issue 11): it
follows up on its own with a reminder, and stops once the order is delivered."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from grainery.client import GrainClient
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import running_cluster

REPO = Path(__file__).resolve().parents[2]


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"```python\n(# order_tracking\.py\n.*?)```", text, re.S)
    assert match, "the README's order-tracking example is missing"
    return match.group(1)


@pytest.fixture(scope="module")
def silo(store: TestStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    folder = tmp_path_factory.mktemp("order-example")
    (folder / "order_tracking.py").write_text(readme_snippet())
    cluster = TestCluster(store, ["order_tracking"], size=1, env={"PYTHONPATH": str(folder)})
    with running_cluster(cluster) as running:
        yield running


@pytest.fixture
async def client(silo: TestCluster) -> AsyncIterator[GrainClient]:
    async with silo.client() as connected:
        yield connected


async def test_the_tracker_follows_up_on_its_own_until_the_order_is_delivered(
    client: GrainClient,
) -> None:
    tracker = client.get_grain("OrderTracker", "order-7")
    await tracker.track(1)  # every second here; the README's default is hourly
    [reminder] = await client.reminders("OrderTracker", "order-7")
    assert (reminder["name"], reminder["period"]) == ("follow-up", 1.0)

    async def checked_twice() -> dict[str, Any] | None:
        state: dict[str, Any] = await tracker.status()
        return state if state["checks"] >= 2 else None

    state = await eventually(checked_twice, 15, "two follow-ups without any call")
    assert state["status"] == "in transit"
    await client.get_grain("Carrier", "order-7").update("delivered")

    async def delivered() -> bool:
        return (await tracker.status())["status"] == "delivered"

    await eventually(delivered, 15, "the follow-up that sees the delivery")
    assert await client.reminders("OrderTracker", "order-7") == []  # it stopped itself
