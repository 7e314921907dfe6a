"""The client's durable control requests (client/durable.py): which failures are resent.

A signal carries an id the grain records once, and a read changes nothing, so both are
resent after a transport failure that may have reached the silo ("Socket closed": the silo
was killed with the request in flight). Anything else that may have run is not resent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from grainery.client import durable
from grainery.client.errors import TransportError
from grainery.client.routing import GrainId

GRAIN = GrainId("Approval", "k")


def socket_closed() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details="Socket closed")


class Router:
    def __init__(self) -> None:
        self.forgotten: list[GrainId] = []

    def route(self, grain: GrainId) -> str:
        return "127.0.0.1:1"

    def forget(self, grain: GrainId) -> None:
        self.forgotten.append(grain)


class Pool:
    @contextmanager
    def borrow(self, address: str) -> Iterator[Any]:
        yield object()


class Security:
    def call_metadata(self) -> tuple[()]:
        return ()


class Client:
    """What _control uses of a GrainClient."""

    default_timeout = 5.0
    gateway_only = False

    def __init__(self) -> None:
        self.router, self.pool, self.security = Router(), Pool(), Security()
        self.refreshed = 0

    async def recover(self, grain: GrainId, address: str, attempt: int, remaining: float
                      ) -> bool:
        """GrainClient.recover's effects, recorded: forget the grain, re-learn the cluster."""
        self.router.forget(grain)
        self.refreshed += 1
        return True


def failing_once() -> tuple[list[int], Any]:
    attempts: list[int] = []

    async def send(stubs: Any, remaining: float, metadata: Any) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise socket_closed()
        return "answered"

    return attempts, send


async def test_an_idempotent_request_is_resent_after_the_socket_closed() -> None:
    client, (attempts, send) = Client(), failing_once()
    assert await durable._control(client, GRAIN, 5.0, send, idempotent=True) == "answered"  # type: ignore[arg-type]
    assert len(attempts) == 2 and client.router.forgotten == [GRAIN] and client.refreshed == 1


async def test_a_request_that_may_have_run_is_not_resent() -> None:
    client, (attempts, send) = Client(), failing_once()
    with pytest.raises(TransportError, match="Socket closed"):
        await durable._control(client, GRAIN, 5.0, send)  # type: ignore[arg-type]
    assert len(attempts) == 1


async def test_signals_and_reads_are_sent_as_idempotent_and_a_cancel_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, bool] = {}

    async def control(client: Any, grain: GrainId, timeout: Any, send: Any,
                      idempotent: bool = False) -> Any:
        stubs = type("Stubs", (), {"management": Management()})()
        seen[send.__qualname__.split(".")[0]] = idempotent
        return await send(stubs, 1.0, ())

    class Management:
        async def Signal(self, request: Any, **_: Any) -> Any:  # noqa: N802
            seen["signal_id"] = bool(request.signal_id)
            return type("Reply", (), {"seq": 7})()

        async def Journal(self, request: Any, **_: Any) -> Any:  # noqa: N802
            return type("Reply", (), {"entries": []})()

        async def RunStatus(self, request: Any, **_: Any) -> Any:  # noqa: N802
            return type("Reply", (), {"status_json": b"{}"})()

        CancelRun = RunStatus  # noqa: N815

    monkeypatch.setattr(durable, "_control", control)
    assert await durable.signal(Client(), GRAIN, "approve") == 7  # type: ignore[arg-type]
    assert seen.pop("signal") is True and seen.pop("signal_id") is True
    await durable.journal(Client(), GRAIN)  # type: ignore[arg-type]
    assert seen.pop("journal") is True
    await durable.run_status(Client(), GRAIN)  # type: ignore[arg-type]
    assert seen.pop("run_status") is True
    await durable.run_status(Client(), GRAIN, cancel=True)  # type: ignore[arg-type]
    assert seen.pop("run_status") is False
