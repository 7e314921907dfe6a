"""The README's agent-team example runs as written against real silos (issue 10)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from grainery.client import GrainClient
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually
from tests.integration.helpers import running_cluster

REPO = Path(__file__).resolve().parents[2]


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"```python\n(# team_example\.py\n.*?)```", text, re.S)
    assert match, "the README's team example is missing"
    return match.group(1)


@pytest.fixture(scope="module")
def team(store: TestStore) -> Iterator[TestCluster]:
    cluster = TestCluster(store, ["examples.team"], size=2,
                          extra_args=["--filter", "examples.team:audit"])
    with running_cluster(cluster) as running:
        yield running


@pytest.fixture
async def client(team: TestCluster) -> AsyncIterator[GrainClient]:
    await team.wait_for_stable_membership(2)
    async with team.client() as connected:
        yield connected


def test_the_readme_example_prints_what_it_says(team: TestCluster, tmp_path: Path) -> None:
    script = readme_snippet().replace("127.0.0.1:7070", team.addresses[0])
    (tmp_path / "team_example.py").write_text(script)
    run = subprocess.run([sys.executable, "team_example.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["draft three options for the launch (6 words)", "acme"]


async def test_the_team_cycle_runs_and_the_archive_gets_the_plan(client: GrainClient) -> None:
    planner = client.get_grain("Planner", "q3")
    plan = await planner.plan("q3 pricing", timeout=20)
    assert plan["verdict"] == "approved"
    assert plan["steps"][1].startswith("draft three options for q3 pricing")
    assert [p["goal"] for p in await planner.plans()] == ["q3 pricing"]

    async def archived() -> bool:
        return await client.get_grain("Archive", "q3").goals() == ["q3 pricing"]

    await eventually(archived, 10, "the one-way call filed the plan")
