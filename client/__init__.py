"""Grainery client SDK: call grains from Python.

This package is the lower layer: the silo runtime imports it for grain-to-grain
calls; it never imports the silo.
"""

from client.channels import ClientSecurity
from client.errors import (
    ActivationFailedError,
    ActivationFencedError,
    DeadlineExceededError,
    GrainApplicationError,
    GrainError,
    InvalidArgumentsError,
    OverloadedError,
    SiloUnavailableError,
    StaleStateError,
    StorageUnavailableError,
    TransportError,
    UnauthenticatedError,
    UnknownGrainTypeError,
    UnknownMethodError,
)
from client.grain_client import GrainClient
from client.grain_ref import GrainRef
from client.routing import GrainId, MemberInfo, MembershipSnapshot
from client.sync import SyncGrainClient

__all__ = [
    "ActivationFailedError",
    "ActivationFencedError",
    "ClientSecurity",
    "DeadlineExceededError",
    "GrainApplicationError",
    "GrainClient",
    "GrainError",
    "GrainId",
    "GrainRef",
    "InvalidArgumentsError",
    "MemberInfo",
    "MembershipSnapshot",
    "OverloadedError",
    "SiloUnavailableError",
    "StaleStateError",
    "StorageUnavailableError",
    "SyncGrainClient",
    "TransportError",
    "UnauthenticatedError",
    "UnknownGrainTypeError",
    "UnknownMethodError",
]
