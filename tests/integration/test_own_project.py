"""The README's "Using Grainery in your own project" runs as written in a fresh project.

The files are taken from README.md itself (every ```python block of that section that
starts with ``# <file>.py``), so the test fails when the README drifts from what works.
They are run by pytest, with this environment's Python, in an empty directory outside
the repository, where only the installed ``grainery`` (and its pytest plugin) is visible.
Afterwards no valkey or silo started by that run may still be alive.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.eventually import eventually_sync

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Using Grainery in your own project"


def readme_files() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.find("\n## ", len(SECTION))]
    files: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        first = block.splitlines()[0]
        if match := re.fullmatch(r"# (\w+\.py)", first.strip()):
            files[match.group(1)] = block
    return files


def processes_under(root: Path) -> list[str]:
    """Live processes whose working directory or command line is inside ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if status != "Z" and (cwd.startswith(str(root)) or str(root) in cmdline):
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


def test_readme_snippet_runs_in_a_fresh_project(tmp_path: Path) -> None:
    files = readme_files()
    assert {"mygrains.py", "test_mygrains.py"} <= set(files), sorted(files)
    project = tmp_path / "myproject"
    temp = tmp_path / "tmp"  # the run's temporary files (store data, silo logs) go here
    project.mkdir()
    temp.mkdir()
    for name, content in files.items():
        (project / name).write_text(content)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GRAINERY_", "PYTHON", "PYTEST"))}
    env["TMPDIR"] = str(temp)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    tests = files["test_mygrains.py"].count("\ndef test_")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{tests} passed" in result.stdout, result.stdout[-3000:]
    eventually_sync(lambda: not processes_under(tmp_path), 15,
                    "every valkey and silo of the project's test run gone")


def test_a_killed_test_process_leaves_no_valkey_behind(tmp_path: Path) -> None:
    """SIGKILL gives atexit no chance: the store must die with the process (death signal)."""
    script = (
        "import os, signal\n"
        "from grainery.testing import TestStore\n"
        f"store = TestStore(data_dir={str(tmp_path)!r}).start()\n"
        "print(store.process.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == -9, result.stderr
    assert result.stdout.strip().isdigit(), result.stdout + result.stderr
    eventually_sync(lambda: not processes_under(tmp_path), 15, "the store's valkey gone")


def test_context_managers_stop_everything(tmp_path: Path) -> None:
    from grainery.testing import TestCluster, TestStore

    with TestStore(data_dir=str(tmp_path)) as store:
        assert store.process is not None
        pid = store.process.pid
        with TestCluster(store, ["tests.grains.probes"], size=1) as cluster:
            silo_pid = cluster.silos[0].process.pid  # type: ignore[union-attr]
            with cluster.sync_client() as client:
                assert client.get_grain("Recorder", "cm").add(3) == 3
        assert not Path(f"/proc/{silo_pid}").exists() or _zombie(silo_pid)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
