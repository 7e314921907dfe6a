"""Start-up as a new user meets it: one embedded store per data directory, ``--join``, and
every refused start is one line on stderr with exit code 2 and a hint.

Each silo here is a real ``grainery silo`` process; the embedded store is a real valkey.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from grainery import SyncGrainClient
from grainery.silo.storage.embedded import free_port
from tests.eventually import eventually_sync

REPO = Path(__file__).resolve().parents[2]
GRAINS = "tests.grains.probes"


def silo_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "grainery", "silo", "--grains", GRAINS, *args]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAINERY_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def refused(argv: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    """Run a start that must be refused; return its single stderr line."""
    result = subprocess.run(argv, cwd=cwd, env=env or clean_env(), capture_output=True,
                            text=True, timeout=60, check=False)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("grainery: error: "), lines[0]
    assert "hint: " in lines[0], lines[0]
    return lines[0]


class Silo:
    """One ``grainery silo`` process whose output goes to a file."""

    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                silo_argv("--port", str(self.port), "--silo-id", name, *args),
                cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
            )
        eventually_sync(self._serving, 30, f"{name} serving")

    def _serving(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        return "serving on" in self.log.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def silos() -> Iterator[list[Silo]]:
    started: list[Silo] = []
    yield started
    for silo in reversed(started):  # the store's owner last
        if silo.process.poll() is None:
            silo.process.kill()
            silo.process.wait(10)


CLUSTER = f"startup-{uuid.uuid4().hex[:8]}"  # each test has its own store


def embedded(tmp_path: Path, silos: list[Silo], name: str = "first") -> tuple[Silo, Path, str]:
    data = tmp_path / "data"
    silo = Silo(tmp_path, name, "--data-dir", str(data), "--store-port", "0",
                "--cluster", CLUSTER)
    silos.append(silo)
    url = (data / "store.url").read_text().strip()
    return silo, data, url


def add(address: str, key: str, n: int) -> int:
    with SyncGrainClient(address, timeout=10.0) as client:
        return int(client.get_grain("Recorder", key).add(n))


def test_second_embedded_store_on_one_data_dir_is_refused(
    tmp_path: Path, silos: list[Silo]
) -> None:
    first, data, url = embedded(tmp_path, silos)
    assert url.startswith("redis://127.0.0.1:")
    assert f"embedded store at {url}" in first.log.read_text()
    assert add(first.address, "k", 5) == 5

    line = refused(silo_argv("--port", str(free_port()), "--data-dir", str(data),
                             "--store-port", "0"))
    assert f"--redis {url}" in line and f"--join {data}" in line, line

    # The first silo and its store are untouched: same grain, same value, still writable.
    assert first.process.poll() is None
    assert add(first.address, "k", 1) == 6


def test_join_uses_the_running_store_of_a_data_dir(tmp_path: Path, silos: list[Silo]) -> None:
    first, data, _url = embedded(tmp_path, silos)
    assert add(first.address, "j", 2) == 2
    second = Silo(tmp_path, "second", "--join", str(data), "--cluster", CLUSTER)
    silos.append(second)
    assert add(second.address, "j", 3) == 5  # the same grain through the joined silo


def test_clean_stop_removes_the_url_and_frees_the_directory(
    tmp_path: Path, silos: list[Silo]
) -> None:
    first, data, _url = embedded(tmp_path, silos)
    assert add(first.address, "s", 4) == 4
    assert first.stop() == 0
    assert not (data / "store.url").exists()
    line = refused(silo_argv("--join", str(data)))
    assert "no running embedded store" in line
    again, _, _ = embedded(tmp_path, silos, "again")  # the lock was released
    assert add(again.address, "s", 1) == 5


def test_join_without_a_running_store_is_refused(tmp_path: Path) -> None:
    line = refused(silo_argv("--join", str(tmp_path)))
    assert "no running embedded store" in line and str(tmp_path) in line


# ----- refused starts: one line, exit 2, a hint ----------------------------------------------
GRAIN = "from grainery import Grain\n\nclass Chat(Grain):\n    async def hi(self) -> str:\n"


def user_project(tmp_path: Path, body: str, name: str = "chat") -> Path:
    (tmp_path / f"{name}.py").write_text(body)
    return tmp_path


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    project = user_project(tmp_path, GRAIN + "        return 'hi' +\n")
    line = refused([sys.executable, "-m", "grainery", "silo", "--grains", "chat"], project)
    assert "syntax error" in line and "chat.py:5" in line, line


def test_a_file_name_for_grains_hints_at_the_module_name(tmp_path: Path) -> None:
    project = user_project(tmp_path, GRAIN + "        return 'hi'\n")
    line = refused([sys.executable, "-m", "grainery", "silo", "--grains", "chat.py"], project)
    assert "use --grains chat" in line, line


def test_missing_dependency_names_it_and_the_importing_module(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("import surely_not_installed_xyz\n")
    project = user_project(tmp_path, "import helpers\n" + GRAIN + "        return 'hi'\n")
    line = refused([sys.executable, "-m", "grainery", "silo", "--grains", "chat"], project)
    assert "'surely_not_installed_xyz'" in line and "'chat'" in line, line
    assert "helpers.py:1" in line, line


def test_unknown_grains_module(tmp_path: Path) -> None:
    line = refused([sys.executable, "-m", "grainery", "silo", "--grains", "nochat"], tmp_path)
    assert "'nochat'" in line, line


def test_port_in_use_is_one_line_without_grpc_noise(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = refused(silo_argv("--port", str(port), "--redis", "redis://127.0.0.1:1/0"))
    assert f"127.0.0.1:{port} is in use" in line and "--port" in line, line


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path, silos: list[Silo]) -> None:
    first, _, _ = embedded(tmp_path, silos)
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already left
    result = subprocess.run(
        [sys.executable, "-m", "grainery", "status", "--target", first.address],
        stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        env=clean_env(),
    )
    os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode == 128 + signal.SIGPIPE


def test_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = refused(silo_argv("--port", str(free_port()), "--metrics-port", str(port),
                                 "--redis", "redis://127.0.0.1:1/0"))
    assert f"metrics port 127.0.0.1:{port} is in use" in line, line


def test_unreachable_store_is_one_line(tmp_path: Path) -> None:
    line = refused(silo_argv("--port", str(free_port()), "--redis",
                             f"redis://127.0.0.1:{free_port()}/0"))
    assert "state store redis://127.0.0.1:" in line and "--redis" in line, line


@pytest.mark.parametrize(("args", "expected"), [
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--redis", "redis://127.0.0.1:1/0", "--join", "data"], "--redis and --join"),
])
def test_invalid_settings_are_one_line(args: list[str], expected: str) -> None:
    assert expected in refused(silo_argv(*args))


def test_invalid_environment_value_is_one_line() -> None:
    env = {**clean_env(), "GRAINERY_STORE_PORT": "soon"}
    assert "GRAINERY_STORE_PORT='soon'" in refused(silo_argv(), env=env)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_a_lingering_store_keeps_its_data_dir_locked(tmp_path: Path, silos: list[Silo]) -> None:
    """The valkey child shares the lock: while it outlives its silo (still able to write the
    AOF), no new store may start on that directory."""
    from grainery.silo.storage.embedded import check_data_dir_free

    first, data, url = embedded(tmp_path, silos)
    assert add(first.address, "l", 7) == 7
    (valkey,) = _children(first.process.pid)
    os.kill(valkey, signal.SIGSTOP)  # the death signal stays pending: valkey lingers
    try:
        first.process.kill()
        first.process.wait(10)
        line = refused(silo_argv("--port", str(free_port()), "--data-dir", str(data),
                                 "--store-port", "0"))
        assert f"--redis {url}" in line, line
    finally:
        os.kill(valkey, signal.SIGCONT)  # now it receives its SIGTERM and exits
    eventually_sync(lambda: check_data_dir_free(data) is None, 15, "the lock released")
    again, _, _ = embedded(tmp_path, silos, "again")
    assert add(again.address, "l", 1) == 8
