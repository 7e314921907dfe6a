"""The error table: every GrainError survives the trip through gRPC status + trailing metadata."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest

from grainery import client
from grainery.client.errors import (
    ERROR_CLASSES,
    ERROR_KIND_KEY,
    RETRY_SAFE_KEY,
    ActivationFencedError,
    DeadlineExceededError,
    GrainApplicationError,
    GrainError,
    InnerCallError,
    InvalidArgumentsError,
    OverloadedError,
    PlacementUnavailableError,
    SiloUnavailableError,
    StaleStateError,
    StorageUnavailableError,
    TooLargeError,
    TransportError,
    UnknownGrainTypeError,
    error_from_status,
    error_metadata,
    from_rpc_error,
)
from grainery.client.grain_client import GrainClient


class FakeRpcError(grpc.RpcError):
    """What a failed call looks like to from_rpc_error (the grpc.Call surface)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str | None = "",
        trailers: Sequence[tuple[str, str | bytes]] | None = (),
    ) -> None:
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details

    def trailing_metadata(self) -> Sequence[tuple[str, str | bytes]] | None:
        return self._trailers


class BareRpcError(grpc.RpcError):
    """An RpcError with none of the Call methods."""


def make(cls: type[GrainError], message: str) -> GrainError:
    return cls(message, "KeyError") if cls is GrainApplicationError else cls(message)


def round_trip(error: GrainError) -> GrainError:
    return from_rpc_error(FakeRpcError(error.code, error.message, error_metadata(error)))


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_round_trips_exactly(cls: type[GrainError]) -> None:
    original = make(cls, f"something about {cls.__name__}")
    back = round_trip(original)
    assert type(back) is cls
    assert back.message == original.message
    assert str(back) == original.message
    assert back.code == cls.code
    assert back.kind == cls.kind


@pytest.mark.parametrize("cls", [c for c in ERROR_CLASSES if c is not TransportError],
                         ids=lambda c: c.__name__)
def test_retry_safety_travels_in_metadata(cls: type[GrainError]) -> None:
    for flag in (True, False):
        error = make(cls, "m")
        error.retry_safe = flag
        assert round_trip(error).retry_safe is flag
    assert make(cls, "m").retry_safe is cls.retry_safe  # the instance flag never leaks


def test_metadata_shape() -> None:
    pairs = dict(error_metadata(StaleStateError("x")))
    assert pairs == {ERROR_KIND_KEY: "stale_state", RETRY_SAFE_KEY: "0"}
    pairs = dict(error_metadata(GrainApplicationError("ValueError: boom", "ValueError")))
    assert pairs[ERROR_KIND_KEY] == "application"
    assert pairs["grainery-error-type"] == "ValueError"
    assert all(isinstance(k, str) and k == k.lower() for k in pairs)  # valid gRPC metadata keys


def test_kinds_are_unique_and_classes_are_grain_errors() -> None:
    kinds = [cls.kind for cls in ERROR_CLASSES]
    assert len(kinds) == len(set(kinds))
    for cls in ERROR_CLASSES:
        assert issubclass(cls, GrainError)
        assert getattr(client, cls.__name__) is cls  # exported from the SDK


def test_application_error_keeps_the_exception_type() -> None:
    back = round_trip(GrainApplicationError("ValueError: bad", "ValueError"))
    assert isinstance(back, GrainApplicationError)
    assert back.error_type == "ValueError"
    no_type = from_rpc_error(FakeRpcError(grpc.StatusCode.UNKNOWN, "x", [(ERROR_KIND_KEY,
                                                                          "application")]))
    assert isinstance(no_type, GrainApplicationError)
    assert no_type.error_type == "Exception"


def test_two_errors_sharing_a_code_are_told_apart_by_kind() -> None:
    stale = round_trip(StaleStateError("s"))
    fenced = round_trip(ActivationFencedError("f"))
    assert StaleStateError.code == ActivationFencedError.code == grpc.StatusCode.ABORTED
    assert type(stale) is StaleStateError
    assert type(fenced) is ActivationFencedError


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, UnknownGrainTypeError),
        (grpc.StatusCode.UNIMPLEMENTED, client.UnknownMethodError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentsError),
        (grpc.StatusCode.UNKNOWN, GrainApplicationError),
        (grpc.StatusCode.FAILED_PRECONDITION, client.ActivationFailedError),
        (grpc.StatusCode.ABORTED, StaleStateError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, client.DeadlineExceededError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, OverloadedError),
        (grpc.StatusCode.UNAUTHENTICATED, client.UnauthenticatedError),
        (grpc.StatusCode.UNAVAILABLE, TransportError),
        (grpc.StatusCode.INTERNAL, TransportError),  # gRPC's own: the connection broke
        (grpc.StatusCode.PERMISSION_DENIED, GrainError),
    ],
)
def test_code_alone_picks_a_class_when_there_is_no_metadata(
    code: grpc.StatusCode, cls: type[GrainError]
) -> None:
    for trailers in ((), None):
        error = from_rpc_error(FakeRpcError(code, "details", trailers))
        assert type(error) is cls
        assert "details" in error.message


def test_unknown_kind_falls_back_to_the_code() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "d",
                                        [(ERROR_KIND_KEY, "from-the-future")]))
    assert type(error) is UnknownGrainTypeError


def test_non_text_metadata_is_ignored() -> None:
    trailers = [("grainery-error-bin", b"\x00"), (ERROR_KIND_KEY, "stale_state")]
    assert type(from_rpc_error(FakeRpcError(grpc.StatusCode.ABORTED, "d", trailers))) \
        is StaleStateError


def test_transport_error_is_retry_safe_only_when_nothing_was_sent() -> None:
    never_sent = from_rpc_error(FakeRpcError(
        grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: ..."))
    assert type(never_sent) is TransportError and never_sent.retry_safe
    refused = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Connection refused"))
    assert refused.retry_safe
    maybe_ran = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert type(maybe_ran) is TransportError and not maybe_ran.retry_safe
    assert TransportError.retry_safe is False


def test_missing_details_and_bare_errors() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, None))
    assert type(error) is UnknownGrainTypeError
    assert error.message  # never empty: falls back on the status code
    bare = from_rpc_error(BareRpcError())
    assert type(bare) is GrainApplicationError  # no code: UNKNOWN


# ----- item 5: too large; item 16: retry safety, broken connections; item 3: inner calls ----
@pytest.mark.parametrize("details", [
    "Sent message larger than max (5000123 vs. 4194304)",
    "Received message larger than max (5000123 vs. 4194304)",
])
def test_grpc_message_size_limit_is_too_large_not_overloaded(details: str) -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, details))
    assert type(error) is TooLargeError
    assert isinstance(error, InvalidArgumentsError)
    assert error.kind == "too_large" and error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not error.retry_safe
    # A silo's own overload still is what it says.
    overloaded = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", [
        (ERROR_KIND_KEY, "overloaded"), (RETRY_SAFE_KEY, "1")]))
    assert type(overloaded) is OverloadedError and overloaded.retry_safe


def test_a_broken_connection_is_a_transport_error_not_a_bare_internal() -> None:
    # What grpcio reports when the silo at the other end was killed mid-call.
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "Internal error from Core"))
    assert type(error) is TransportError
    assert not error.retry_safe  # the call may have run
    assert "Internal error from Core" in error.message
    # The silo's own internal error says so with its kind, and stays a plain GrainError.
    own = from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "internal error",
                                      error_metadata(GrainError("internal error"))))
    assert type(own) is GrainError and own.message == "internal error"
    on_stream = error_from_status(grpc.StatusCode.INTERNAL.value[0], "Stream removed", "",
                                  False, "")
    assert type(on_stream) is TransportError


def test_placement_failure_is_retry_safe_storage_unavailable() -> None:
    error = PlacementUnavailableError("could not place A/k: store down; the call did not run")
    assert isinstance(error, StorageUnavailableError) and error.retry_safe
    back = round_trip(error)
    assert type(back) is PlacementUnavailableError and back.retry_safe
    assert not StorageUnavailableError("x").retry_safe


def test_inner_call_error_names_the_inner_call_and_keeps_its_kind() -> None:
    inner = InvalidArgumentsError("add() takes 1 positional argument(s), got 2")
    inner.origin = "B/k.add"
    outer = InnerCallError.wrap(inner)
    assert isinstance(outer, GrainApplicationError)
    assert outer.kind == "inner_call" and outer.code == grpc.StatusCode.UNKNOWN
    assert outer.inner_kind == "invalid_arguments"
    assert outer.message.startswith("inner call to B/k.add failed (invalid_arguments): add()")
    assert not outer.retry_safe
    back = round_trip(outer)
    assert type(back) is InnerCallError
    assert back.inner_kind == "invalid_arguments" and back.message == outer.message
    # Two levels: the innermost kind survives, each hop is named.
    outer.origin = "A/k.relay"
    twice = InnerCallError.wrap(outer)
    assert twice.inner_kind == "invalid_arguments"
    assert twice.message.startswith("inner call to A/k.relay failed (invalid_arguments): "
                                    "inner call to B/k.add failed")


async def test_client_giving_up_at_the_deadline_says_the_call_did_not_run() -> None:
    client = GrainClient("127.0.0.1:1", timeout=0.3)
    refused = SiloUnavailableError("silo s1 is not serving (shutting down or fenced)")
    refused.retry_safe = True

    class RefusingPool:
        max_message_bytes = 4 * 1024 * 1024

        async def invoke(self, *args: object) -> None:
            raise refused

        async def close(self) -> None:
            pass

    async def reachable(avoid: str | None = None) -> bool:
        return True

    client.pool = RefusingPool()  # type: ignore[assignment]
    client.refresh_membership = reachable  # type: ignore[method-assign]
    with pytest.raises(DeadlineExceededError) as caught:
        await client.invoke("Counter", "a", "add", [1])
    error = caught.value
    assert error.retry_safe, "every attempt was refused before it ran"
    assert error.__cause__ is refused
    assert "did not run" in error.message and "unavailable: silo s1 is not serving" in \
        error.message
    assert DeadlineExceededError("x").retry_safe is False


async def test_a_call_stream_broken_by_a_failed_write_fails_calls_as_transport_errors() -> None:
    """grpcio reports a write on a stream whose connection died as INTERNAL "Internal error
    from Core"; the calls on that stream must fail as (not retry-safe) TransportErrors."""
    from grpc.aio import AioRpcError, Metadata

    from grainery.client.call_stream import CallStream

    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never connects: nothing is sent
    try:
        stream = CallStream(channel, ())
        broken_call = object()
        stream._call = broken_call
        sent: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        stream._pending[1] = sent  # type: ignore[assignment]
        stream._broken(broken_call, AioRpcError(
            grpc.StatusCode.INTERNAL, Metadata(), Metadata(), "Internal error from Core"))
        error = sent.exception()
        assert type(error) is TransportError, repr(error)
        assert not error.retry_safe
    finally:
        await channel.close()
