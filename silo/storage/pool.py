"""The silo's Redis connection pool: never write a command into a connection the store closed.

Why: after the store restarts, every pooled connection still points at the old server
process, which closed it. redis-py hands such a connection out without looking (its checkout
check is skipped while maintenance notifications are on "auto", the default), the command is
written into the dead socket, and the failure shows only while reading the reply, where the
client cannot tell whether a write ran: a burst of writes after a restart all failed with
"may or may not have been applied", although none had reached the store.

The rules, in the order a command meets them:
- When the pool hands a connection out, one that saw end-of-file or holds unread bytes, or
  that was opened before the pool last saw a connection failure, is closed and reopened.
  Nothing was sent yet, so this is not a retry.
- A failure before any byte of the command was written (connecting, the health-check PING,
  the check above) raises :class:`NotSentError`. Only that error is retried, once, on a
  fresh connection. A failure while writing or while reading the reply is never retried: a
  Lua write whose reply was lost may have run.
- Any connection failure (not a timeout) moves the pool to a new generation: every
  connection opened before it reconnects before its next command, since it talked to the
  same server process. This is how a detected restart refreshes the whole pool.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class NotSentError(RedisConnectionError):
    """The connection failed before any byte of the command was written: it did not run."""


class _Generation:
    """Shared by a pool and its connections: bumped on every connection failure."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _SafeSend:
    """Mixed into a redis-py connection class (plain TCP or TLS) by :class:`StorePool`."""

    generation: _Generation
    _opened_in = -1  # the pool generation this connection's socket was opened in

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[misc]
        self._opened_in = self.generation.value

    async def connect(self) -> None:
        try:
            await super().connect()  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.generation.value += 1
            if isinstance(exc, NotSentError):
                raise
            raise NotSentError(f"could not connect to the store: {exc}") from exc

    async def usable(self) -> bool:
        """Checked when the pool hands the connection out, never between a command and its
        reply (the connection handshake pipelines commands, so unread bytes are normal then)."""
        conn: Any = self
        if self._opened_in != self.generation.value:
            return False  # opened before a connection failure: maybe the old server process
        probe = getattr(conn, "can_read", None) or conn.can_read_destructive
        try:
            return not await probe()  # end-of-file or unread bytes: not usable
        except (RedisConnectionError, OSError):
            return False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        conn: Any = self
        if not conn.is_connected:
            await self.connect()
        if check_health:
            await self.check_health()
        await super().send_packed_command(command, check_health=False)  # type: ignore[misc]

    async def check_health(self) -> None:
        conn: Any = self
        try:
            await super().check_health()  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await conn.disconnect(nowait=True)
            if isinstance(exc, NotSentError):
                raise
            raise NotSentError(f"the store failed a health check: {exc}") from exc

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except RedisConnectionError:
            self.generation.value += 1
            raise


_SAFE_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _safe(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    if issubclass(connection_class, _SafeSend):
        return connection_class
    if connection_class not in _SAFE_CLASSES:
        _SAFE_CLASSES[connection_class] = type(
            f"Store{connection_class.__name__}", (_SafeSend, connection_class), {}
        )
    return _SAFE_CLASSES[connection_class]


class StorePool(aioredis.BlockingConnectionPool):
    """A blocking pool (a burst waits for a connection instead of failing) of connections
    that follow the rules above; retries only :class:`NotSentError`, once."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["connection_class"] = _safe(kwargs.get("connection_class", aioredis.Connection))
        kwargs["retry"] = Retry(NoBackoff(), 1, supported_errors=(NotSentError,))
        super().__init__(**kwargs)
        self.generation = _Generation()

    def make_connection(self) -> AbstractConnection:
        connection: Any = super().make_connection()  # type: ignore[no-untyped-call]
        connection.generation = self.generation
        return connection  # type: ignore[no-any-return]

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        """Hand out only a connection that can take a command: one that saw end-of-file, holds
        unread bytes, or predates a connection failure is reopened first (nothing sent yet)."""
        conn: Any = connection
        if conn.is_connected and not await conn.usable():
            await conn.disconnect(nowait=True)
        await conn.connect()
