"""The README's streams example runs as written against real silos (issue 12): agents
coordinating over streams (examples/stock_agents.py) and a client watching the plans."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from grainery.silo.testing import TestCluster, TestStore
from tests.integration.helpers import running_cluster

REPO = Path(__file__).resolve().parents[2]


def readme_snippet(name: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"```python\n(# {re.escape(name)}\n.*?)```", text, re.S)
    assert match, f"the README's {name} is missing"
    return match.group(1)


@pytest.fixture(scope="module")
def agents(store: TestStore) -> Iterator[TestCluster]:
    with running_cluster(TestCluster(store, ["examples.stock_agents"], size=2)) as running:
        yield running


def test_the_readme_shows_the_example_module_as_it_is() -> None:
    assert readme_snippet("stock_agents.py") in (REPO / "examples" / "stock_agents.py").read_text()


def test_the_readme_client_prints_what_the_readme_says(agents: TestCluster,
                                                       tmp_path: Path) -> None:
    agents.wait_stable(2)
    script = readme_snippet("watch_plans.py").replace("127.0.0.1:7070", agents.addresses[0])
    (tmp_path / "watch_plans.py").write_text(script)
    run = subprocess.run([sys.executable, "watch_plans.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    text = (REPO / "README.md").read_text()
    printed = re.search(r"prints\n\n```\n(.*?)```", text[text.index("# watch_plans.py"):], re.S)
    assert printed, "the README does not say what the client prints"
    assert run.stdout.splitlines() == printed.group(1).splitlines()
