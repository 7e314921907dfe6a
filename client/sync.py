"""A blocking wrapper over GrainClient for scripts and notebooks.

It runs a private event loop on a daemon thread, so it works whether or not the
caller has a loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from grainery.client.context import current_request_context, request_context
from grainery.client.grain_client import GrainClient
from grainery.client.grain_ref import GrainRef
from grainery.client.streams import SyncClientStream

T = TypeVar("T")


async def _within(values: Mapping[str, str], call: Coroutine[Any, Any, T]) -> T:
    with request_context(values):
        return await call


class SyncGrainRef:
    __slots__ = ("_client", "grain_type", "key")

    def __init__(self, client: SyncGrainClient, grain_type: str, key: str) -> None:
        self._client, self.grain_type, self.key = client, grain_type, key

    def call(
        self, method: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Like GrainRef.call, blocking; ``timeout`` is reserved (see grain_ref)."""
        return self._client.invoke(self.grain_type, self.key, method, args, timeout, kwargs)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def remote(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
            return self.call(method, *args, timeout=timeout, **kwargs)

        return remote

    # Durable agents: GrainRef's methods, blocking. As there, these names shadow grain
    # methods of the same name (``call("signal", ...)`` still reaches such a method).
    def _ref(self) -> GrainRef:
        return self._client.wrapped.get_grain(self.grain_type, self.key)

    def journal(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self._client.run(self._ref().journal(after, limit))

    def signal(self, name: str, payload: Any = None, signal_id: str | None = None) -> int:
        return self._client.run(self._ref().signal(name, payload, signal_id))

    def run_status(self, run: int = 0) -> dict[str, Any]:
        return self._client.run(self._ref().run_status(run))

    def run_result(self, run: int = 0, timeout: float = 30.0) -> Any:
        return self._client.run(self._ref().run_result(run, timeout))

    def cancel_run(self, run: int = 0, reason: str = "") -> dict[str, Any]:
        return self._client.run(self._ref().cancel_run(run, reason))


class SyncGrainClient:
    """``with SyncGrainClient("host:port") as c: c.get_grain("Counter", "a").add(1)``

    ``options`` are GrainClient's; ``filters=[...]`` (async outgoing call filters) run on the
    client's own loop thread."""

    def __init__(self, *seeds: str | Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client: GrainClient = self._run(self._make(seeds, options))

    @staticmethod
    async def _make(seeds: Sequence[str | Sequence[str]], options: dict[str, Any]) -> GrainClient:
        client = GrainClient(*seeds, **options)
        await client.connect()
        return client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the wrapped client on its loop thread; blocks for the result."""
        return self._run(coroutine)

    def get_stream(self, namespace: str, key: str) -> SyncClientStream:
        """The stream ``(namespace, key)``: ``publish(event)``, ``for token, event in
        subscribe(from_token)`` (blocking)."""
        return SyncClientStream(self, self._client.get_stream(namespace, key))

    def get_grain(self, grain_type: str, key: str) -> SyncGrainRef:
        return SyncGrainRef(self, grain_type, str(key))

    @property
    def wrapped(self) -> GrainClient:
        """The GrainClient this wraps (its coroutines run with ``run``)."""
        return self._client

    def reminders(self, grain_type: str, key: str, include_runtime: bool = False,
                  timeout: float | None = None) -> list[dict[str, Any]]:
        """The durable reminders of ``grain_type/key`` (see GrainClient.reminders)."""
        return self._run(self._client.reminders(grain_type, key, include_runtime, timeout))

    def invoke(
        self, grain_type: str, key: str, method: str, args: Sequence[Any] = (),
        timeout: float | None = None, kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        call = self._client.invoke(grain_type, key, method, args, timeout, kwargs)
        values = current_request_context()
        # The loop runs on another thread, which does not see this thread's request context.
        return self._run(_within(values, call) if values else call)

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncGrainClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
