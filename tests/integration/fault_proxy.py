"""A TCP proxy that can black-hole traffic: 'Redis unreachable for one silo only'.

Runs its own event loop on a thread so tests can flip it while their own loop
is busy. Blocked means: bytes in either direction are dropped and new
connections are accepted but never served, so the client sees time-outs,
as with a network partition, not a clean connection refusal.

It can also fail one command precisely (:meth:`FaultProxy.fail_next`): the first
client->server chunk containing a marker is either dropped (the command never
reaches the store) or delivered with its reply swallowed (the command ran, the
client never learns it); either way that connection is then closed. With ``hold`` the
delivered command's connection stays open with every reply dropped until the test calls
:meth:`FaultProxy.cut` (so the test can first see that the command ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from grainery.silo.storage.embedded import free_port


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.blocked = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._fault: tuple[bytes, bool, bool] | None = None
        self._held: list[asyncio.StreamWriter] = []
        self.faults_fired = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(5)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        swallow = asyncio.Event()
        await asyncio.gather(
            self._pipe(reader, upstream_writer, swallow, writer),
            self._pipe(upstream_reader, writer, swallow, writer),
            return_exceptions=True,
        )
        for w in (writer, upstream_writer):
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        swallow: asyncio.Event, client: asyncio.StreamWriter,
    ) -> None:
        upstream = writer is not client
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if self.blocked:
                continue  # black-holed
            if not upstream and swallow.is_set():
                if client in self._held:
                    continue  # held: replies dropped until cut()
                client.close()  # the command ran; its reply is lost with the connection
                break
            if upstream and self._fault is not None and self._fault[0] in data:
                _, deliver, hold = self._fault
                self._fault = None
                self.faults_fired += 1
                if not deliver:
                    client.close()  # the command never reaches the store
                    break
                if hold:
                    self._held.append(client)
                swallow.set()
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    def fail_next(self, marker: bytes, deliver: bool, hold: bool = False) -> None:
        """Fail the next command whose bytes contain ``marker`` (once): ``deliver=False``
        drops it, ``deliver=True`` lets it run and loses the reply (``hold``: the
        connection stays open, replies dropped, until ``cut``)."""
        self._fault = (marker, deliver, hold)

    def cut(self) -> None:
        """Close the connections held by ``fail_next(..., hold=True)``."""
        def close() -> None:
            for writer in self._held:
                writer.close()
            self._held.clear()

        self._loop.call_soon_threadsafe(close)

    def block(self) -> None:
        self.blocked = True

    def unblock(self) -> None:
        self.blocked = False

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
