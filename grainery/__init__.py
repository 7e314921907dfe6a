"""Grainery: Orleans-style virtual actors (grains) for Python.

The public names live here: ``from grainery import Grain, GrainClient, SyncGrainClient``.
Subpackages: :mod:`grainery.silo` (the runtime), :mod:`grainery.client` (the client SDK,
the lower layer), :mod:`grainery.testing` (test clusters for your own grains).
"""

from importlib.metadata import PackageNotFoundError, version

from grainery.client import (
    ActivationFailedError,
    ActivationFencedError,
    ClientSecurity,
    DeadlineExceededError,
    DeadlockError,
    FilterError,
    GrainApplicationError,
    GrainClient,
    GrainError,
    GrainRef,
    InnerCallError,
    InvalidArgumentsError,
    InvalidContextError,
    OverloadedError,
    PermissionDeniedError,
    PlacementUnavailableError,
    SiloUnavailableError,
    StaleStateError,
    StorageUnavailableError,
    SyncGrainClient,
    TooLargeError,
    TransportError,
    UnauthenticatedError,
    UnknownGrainTypeError,
    UnknownMethodError,
    request_context,
)
from grainery.client.durable import RunFailedError
from grainery.silo.decorators import interleave, one_way, read_only, stateless_worker
from grainery.silo.durable.decorator import durable
from grainery.silo.durable.errors import (
    DurableBusyError,
    NonDeterminismError,
    RunCancelledError,
    StepFailedError,
)
from grainery.silo.durable.retry import RetryPolicy
from grainery.silo.grain import Grain, StatelessWorkerStateError
from grainery.silo.reminders.model import ReminderInfo, ReminderTick
from grainery.silo.streams.subscriptions import implicit_subscription

try:
    __version__ = version("grainery")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "ActivationFailedError",
    "ActivationFencedError",
    "ClientSecurity",
    "DeadlineExceededError",
    "DeadlockError",
    "DurableBusyError",
    "FilterError",
    "Grain",
    "GrainApplicationError",
    "GrainClient",
    "GrainError",
    "GrainRef",
    "InnerCallError",
    "InvalidArgumentsError",
    "InvalidContextError",
    "NonDeterminismError",
    "OverloadedError",
    "PermissionDeniedError",
    "PlacementUnavailableError",
    "ReminderInfo",
    "ReminderTick",
    "RetryPolicy",
    "RunCancelledError",
    "RunFailedError",
    "SiloUnavailableError",
    "StaleStateError",
    "StatelessWorkerStateError",
    "StepFailedError",
    "StorageUnavailableError",
    "SyncGrainClient",
    "TooLargeError",
    "TransportError",
    "UnauthenticatedError",
    "UnknownGrainTypeError",
    "UnknownMethodError",
    "__version__",
    "durable",
    "implicit_subscription",
    "interleave",
    "one_way",
    "read_only",
    "request_context",
    "stateless_worker",
]
