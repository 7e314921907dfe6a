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
        return remote

    def __repr__(self) -> str:
        return f"GrainRef({self.grain.grain_type!r}, {self.grain.key!r})"
