"""A TLS-terminating TCP proxy: a ``rediss://`` endpoint in front of the plaintext test store.

The embedded valkey-server wheel is built without TLS, so tests put this proxy
(Python's ssl module, real TLS 1.2+) in front of it to prove that silos speak
``rediss://`` with certificate verification end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading

from grainery.silo.storage.embedded import free_port


class TlsProxy:
    def __init__(self, target_port: int, cert: str, key: str) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> TlsProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(5)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self._context
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
