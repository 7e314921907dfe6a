"""GrainRef: a proxy whose attributes are awaitable remote calls.

``await ref.add(5)`` calls method ``add`` of the grain; ``await ref.add(5,
by=2)`` passes a keyword argument; ``await ref.add(5, timeout=2.0)`` overrides
the deadline. ``timeout`` is the proxy's own keyword, never sent to the grain: a
grain parameter named ``timeout`` can be given by keyword only through
``client.invoke(..., kwargs={"timeout": ...})``. ``ref.call("add", 5)`` does the
same for method names that are not Python identifiers. The proxy checks nothing
about the method: the silo's per-type method table is the only authority.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grainery.client.grain_client import GrainClient
    from grainery.client.routing import GrainId


class GrainRef:
    __slots__ = ("_client", "grain")

    def __init__(self, client: GrainClient, grain: GrainId) -> None:
        self._client = client
        self.grain = grain

    @property
    def grain_type(self) -> str:
        return self.grain.grain_type

    @property
    def key(self) -> str:
        return self.grain.key

    def call(
        self, method: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Awaitable[Any]:
        return self._client.invoke(
            self.grain.grain_type, self.grain.key, method, args, timeout, kwargs
        )

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        def remote(*args: Any, timeout: float | None = None, **kwargs: Any) -> Awaitable[Any]:
            return self.call(method, *args, timeout=timeout, **kwargs)

        remote.__name__ = method
        remote.__grainery_remote__ = True  # type: ignore[attr-defined]  # awaitable (steps)
        return remote

    # ----- durable agents (client/durable.py) -------------------------------
    # These names shadow grain methods of the same name on the proxy; ``ref.call("signal")``
    # still reaches such a method.
    async def journal(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The grain's journal entries with ``seq > after`` (oldest first, at most
        ``limit``): dicts with seq, kind, data, time_ms."""
        from grainery.client import durable

        return await durable.journal(self._client, self.grain, after, limit)

    async def signal(self, name: str, payload: Any = None, signal_id: str | None = None
                     ) -> int:
        """Send signal ``name`` to the grain's durable run (buffered if it does not wait
        for it yet); returns the signal's journal sequence number. The grain records a
        signal once per ``signal_id`` (default: a fresh uuid4 per call, kept across the
        call's own resends); pass your own id to make your retries of it safe too."""
        from grainery.client import durable

        return await durable.signal(self._client, self.grain, name, payload,
                                    signal_id=signal_id)

    async def run_status(self, run: int = 0) -> dict[str, Any]:
        """The status of the grain's run ``run`` (0: the current one, else the last)."""
        from grainery.client import durable

        return await durable.run_status(self._client, self.grain, run)

    async def run_result(self, run: int = 0, timeout: float = 30.0) -> Any:
        """Wait for the run to end and return its result; RunFailedError if it failed,
        was cancelled or parked."""
        from grainery.client import durable

        return await durable.run_result(self._client, self.grain, run, timeout)

    async def cancel_run(self, run: int = 0, reason: str = "") -> dict[str, Any]:
        """Cancel the grain's running durable run (RunCancelledError is raised in it at its
        next step, wait or sleep); returns its status."""
        from grainery.client import durable

        return await durable.run_status(self._client, self.grain, run, cancel=True,
                                        reason=reason)

    def __repr__(self) -> str:
        return f"GrainRef({self.grain.grain_type!r}, {self.grain.key!r})"
