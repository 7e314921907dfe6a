"""The error table: every GrainError survives the trip through gRPC status + trailing metadata."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from grainery import client
from grainery.client.errors import (
    ERROR_CLASSES,
    ERROR_KIND_KEY,
    RETRY_SAFE_KEY,
    ActivationFencedError,
    GrainApplicationError,
    GrainError,
    InvalidArgumentsError,
    OverloadedError,
    StaleStateError,
    TransportError,
    UnknownGrainTypeError,
    error_metadata,
    from_rpc_error,
)


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
        (grpc.StatusCode.INTERNAL, GrainError),
        (grpc.StatusCode.PERMISSION_DENIED, GrainError),
    ],
)
def test_code_alone_picks_a_class_when_there_is_no_metadata(
    code: grpc.StatusCode, cls: type[GrainError]
) -> None:
    for trailers in ((), None):
        error = from_rpc_error(FakeRpcError(code, "details", trailers))
        assert type(error) is cls
        assert error.message == "details"


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
