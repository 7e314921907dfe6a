"""Grainery client SDK: call grains from Python.

This package is the lower layer: the silo runtime imports it for grain-to-grain
calls; it never imports the silo.
"""

from grainery.client.channels import ClientSecurity
from grainery.client.context import request_context
from grainery.client.errors import (
    ActivationFailedError,
    ActivationFencedError,
    DeadlineExceededError,
    DeadlockError,
    FilterError,
    GrainApplicationError,
    GrainError,
    InnerCallError,
    InvalidArgumentsError,
    InvalidContextError,
    OverloadedError,
    PermissionDeniedError,
    PlacementUnavailableError,
    SiloUnavailableError,
    StaleStateError,
    StorageUnavailableError,
    TooLargeError,
    TransportError,
    UnauthenticatedError,
    UnknownGrainTypeError,
    UnknownMethodError,
)
from grainery.client.grain_client import GrainClient
from grainery.client.grain_ref import GrainRef
from grainery.client.routing import GrainId, MemberInfo, MembershipSnapshot
from grainery.client.sync import SyncGrainClient

__all__ = [
    "ActivationFailedError",
    "ActivationFencedError",
    "ClientSecurity",
    "DeadlineExceededError",
    "DeadlockError",
    "FilterError",
    "GrainApplicationError",
    "GrainClient",
    "GrainError",
    "GrainId",
    "GrainRef",
    "InnerCallError",
    "InvalidArgumentsError",
    "InvalidContextError",
    "MemberInfo",
    "MembershipSnapshot",
    "OverloadedError",
    "PermissionDeniedError",
    "PlacementUnavailableError",
    "SiloUnavailableError",
    "StaleStateError",
    "StorageUnavailableError",
    "SyncGrainClient",
    "TooLargeError",
    "TransportError",
    "UnauthenticatedError",
    "UnknownGrainTypeError",
    "UnknownMethodError",
    "request_context",
]
