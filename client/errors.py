"""Errors a grain caller can see, and the one table that maps them to gRPC.

Every error Grainery raises is a :class:`GrainError`. Each subclass names the
gRPC status code it travels as and whether retrying the call is safe, i.e.
whether the call provably never ran grain code. Silos attach the subclass's
``kind`` as trailing metadata so clients in any language can tell apart two
errors that share a status code.
"""

from __future__ import annotations

import grpc

ERROR_KIND_KEY = "grainery-error"
RETRY_SAFE_KEY = "grainery-retry-safe"


class GrainError(Exception):
    """Root of every Grainery error."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    kind: str = "internal"
    retry_safe: bool = False
    # Set by a silo on an error that a grain-to-grain call raised ("Type/key.method"), so
    # that, if the calling grain lets it escape, its own caller learns it came from inside.
    origin: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownGrainTypeError(GrainError):
    code, kind, retry_safe = grpc.StatusCode.NOT_FOUND, "unknown_grain_type", False


class UnknownMethodError(GrainError):
    code, kind, retry_safe = grpc.StatusCode.UNIMPLEMENTED, "unknown_method", False


class InvalidArgumentsError(GrainError):
    code, kind, retry_safe = grpc.StatusCode.INVALID_ARGUMENT, "invalid_arguments", False


class TooLargeError(InvalidArgumentsError):
    """The arguments exceed the message-size bound: the caller's input is at fault, not the
    silo's load, so it is never retried (an ``overloaded`` error would invite a retry)."""

    code, kind, retry_safe = grpc.StatusCode.INVALID_ARGUMENT, "too_large", False


class InvalidContextError(InvalidArgumentsError):
    """The call's request context or call chain breaks a bound or a naming rule (too many
    entries, too many bytes, a bad name or value, a chain longer than the hop limit). The
    message says which; the call did not run, and the same call would be refused again."""

    code, kind, retry_safe = grpc.StatusCode.INVALID_ARGUMENT, "invalid_context", False


class DeadlockError(GrainError):
    """The call would re-enter a non-reentrant grain that is already in its own call chain,
    waiting (directly or not) for this very call: it could only end at the deadline, so it
    fails at once. The message names the cycle (``A/1 -> B/2 -> A/1``). Not retry-safe: the
    calls before it in the chain ran, and retrying the same chain deadlocks again."""

    code, kind, retry_safe = grpc.StatusCode.FAILED_PRECONDITION, "deadlock", False


class GrainApplicationError(GrainError):
    """The grain method raised; ``error_type`` is the exception's class name."""

    code, kind, retry_safe = grpc.StatusCode.UNKNOWN, "application", False

    def __init__(self, message: str, error_type: str = "Exception") -> None:
        super().__init__(message)
        self.error_type = error_type


class InnerCallError(GrainApplicationError):
    """The grain method let an error of one of *its own* grain-to-grain calls escape.

    Why a kind of its own: an inner ``invalid_arguments`` (or ``unknown_method``...) says
    the calling grain's code is wrong, not the outer caller's arguments. The message names
    the inner call (``inner call to B/key.method failed (kind): ...``) and ``error_type``
    carries the innermost error's kind. The outer method ran, so it is never retry-safe.
    """

    code, kind, retry_safe = grpc.StatusCode.UNKNOWN, "inner_call", False

    @property
    def inner_kind(self) -> str:
        return self.error_type

    @classmethod
    def wrap(cls, inner: GrainError) -> InnerCallError:
        kind = inner.inner_kind if isinstance(inner, InnerCallError) else inner.kind
        message = f"inner call to {inner.origin} failed ({kind}): {inner.message}"
        if len(message) > 2000:  # deep nesting: keep the outermost call and the root cause
            message = f"{message[:990]} ... {message[-1000:]}"
        return cls(message, kind)


class FilterError(GrainApplicationError):
    """A call filter (silo-wide, the grain's ``on_incoming_call``, or the client's own)
    raised an exception of its own; the message names the filter, ``error_type`` the
    exception's class. Whether the grain ran depends on where the filter failed, so it is
    never retry-safe."""

    code, kind, retry_safe = grpc.StatusCode.UNKNOWN, "filter", False


class PermissionDeniedError(GrainError):
    """A call filter refused the call (it raised ``PermissionError``), or a caller that is not
    a silo of the cluster made a system call (a runtime hook)."""

    code, kind, retry_safe = grpc.StatusCode.PERMISSION_DENIED, "permission_denied", False


class ActivationFailedError(GrainError):
    """``on_activate`` raised or state could not be loaded; nothing ran, the next call retries."""

    code, kind, retry_safe = grpc.StatusCode.FAILED_PRECONDITION, "activation_failed", True


class StaleStateError(GrainError):
    """A state write lost the optimistic-concurrency check (ETag) and was not applied."""

    code, kind, retry_safe = grpc.StatusCode.ABORTED, "stale_state", False


class ActivationFencedError(GrainError):
    """A newer activation of the grain exists elsewhere; this one's write was refused."""

    code, kind, retry_safe = grpc.StatusCode.ABORTED, "fenced", False


class DeadlineExceededError(GrainError):
    code, kind, retry_safe = grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", False


class SiloUnavailableError(GrainError):
    """The silo is shutting down, fenced, or the grain is moving; the call never ran."""

    code, kind, retry_safe = grpc.StatusCode.UNAVAILABLE, "unavailable", True


class OverloadedError(GrainError):
    """Too many calls in flight or queued; the call never ran. Back off and retry."""

    code, kind, retry_safe = grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded", True


class StorageUnavailableError(GrainError):
    """The state store (Redis) could not be reached."""

    code, kind, retry_safe = grpc.StatusCode.UNAVAILABLE, "storage_unavailable", False


class PlacementUnavailableError(StorageUnavailableError):
    """The store failed while the silo was finding or registering the grain's activation,
    before any grain code ran: the call did not run and is safe to retry."""

    code, kind, retry_safe = grpc.StatusCode.UNAVAILABLE, "placement_unavailable", True


class UnauthenticatedError(GrainError):
    code, kind, retry_safe = grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", False


class TransportError(GrainError):
    """The call failed in transport; whether it ran is unknown unless ``retry_safe``."""

    code, kind, retry_safe = grpc.StatusCode.UNAVAILABLE, "transport", False


ERROR_CLASSES: tuple[type[GrainError], ...] = (
    UnknownGrainTypeError,
    UnknownMethodError,
    InvalidArgumentsError,
    TooLargeError,
    InvalidContextError,
    DeadlockError,
    GrainApplicationError,
    InnerCallError,
    FilterError,
    PermissionDeniedError,
    ActivationFailedError,
    StaleStateError,
    ActivationFencedError,
    DeadlineExceededError,
    SiloUnavailableError,
    OverloadedError,
    StorageUnavailableError,
    PlacementUnavailableError,
    UnauthenticatedError,
    TransportError,
)
_BY_KIND: dict[str, type[GrainError]] = {cls.kind: cls for cls in ERROR_CLASSES}
_BY_KIND[GrainError.kind] = GrainError  # a silo's own internal error says "internal"
_BY_CODE: dict[grpc.StatusCode, type[GrainError]] = {
    grpc.StatusCode.NOT_FOUND: UnknownGrainTypeError,
    grpc.StatusCode.UNIMPLEMENTED: UnknownMethodError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentsError,
    grpc.StatusCode.UNKNOWN: GrainApplicationError,
    grpc.StatusCode.FAILED_PRECONDITION: ActivationFailedError,
    grpc.StatusCode.ABORTED: StaleStateError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.UNAVAILABLE: TransportError,
}
# grpc-core says this when no connection could be made: the request was never sent.
_NEVER_SENT_MARKERS = ("failed to connect to all addresses", "Connection refused")
# gRPC's own message-size check (client send or server receive), which it reports as
# RESOURCE_EXHAUSTED with no Grainery metadata.
_TOO_LARGE_MARKER = "larger than max"


def error_metadata(error: GrainError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata a silo attaches to a failed call."""
    pairs = [(ERROR_KIND_KEY, error.kind), (RETRY_SAFE_KEY, "1" if error.retry_safe else "0")]
    if isinstance(error, GrainApplicationError):
        pairs.append(("grainery-error-type", error.error_type))
    return tuple(pairs)


_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def build_error(
    code: grpc.StatusCode, message: str, kind: str = "", retry_safe: bool | None = None,
    error_type: str = "",
) -> GrainError:
    """The GrainError for a status code plus the silo's error kind (the one mapping table).

    Without a kind, the status came from gRPC itself, not from a silo: INTERNAL then means
    the connection broke under the call (a killed silo), i.e. a transport failure, and
    RESOURCE_EXHAUSTED about message size means the request was too large."""
    cls = _BY_KIND.get(kind)
    if cls is None:
        if code is grpc.StatusCode.INTERNAL:
            cls = TransportError
        elif code is grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE_MARKER in message:
            cls = TooLargeError
        else:
            cls = _BY_CODE.get(code, GrainError)
    if issubclass(cls, GrainApplicationError):
        result: GrainError = cls(message, error_type or "Exception")
    elif cls is TransportError and code is grpc.StatusCode.INTERNAL:
        result = cls(f"the connection broke during the call (gRPC INTERNAL: {message})")
    else:
        result = cls(message or code.name)
    if cls is TransportError:
        result.retry_safe = any(marker in message for marker in _NEVER_SENT_MARKERS)
    else:
        # Only a silo's own word makes a call retry-safe: a RESOURCE_EXHAUSTED from gRPC
        # itself (message too large) must not be retried as if the silo were overloaded.
        result.retry_safe = bool(retry_safe)
    return result


def error_from_status(number: int, message: str, kind: str, retry_safe: bool,
                      error_type: str) -> GrainError:
    """The GrainError for a per-call result on the multiplexed stream."""
    code = _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
    return build_error(code, message, kind, retry_safe, error_type)


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> GrainError:
    """Turn a failed gRPC call into the matching :class:`GrainError`."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    trailers = {}
    if hasattr(error, "trailing_metadata"):
        trailers = {k: v for k, v in (error.trailing_metadata() or ()) if isinstance(v, str)}
    return build_error(
        code, details, trailers.get(ERROR_KIND_KEY, ""), trailers.get(RETRY_SAFE_KEY) == "1",
        trailers.get("grainery-error-type", ""),
    )
