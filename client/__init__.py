"""Grainery client SDK: call grains from Python.

This package is the lower layer: the silo runtime imports it for grain-to-grain
calls; it never imports the silo.
"""

from grainery.client.channels import ClientSecurity
from grainery.client.errors import (
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
from grainery.client.grain_client import GrainClient
from grainery.client.grain_ref import GrainRef
from grainery.client.routing import GrainId, MemberInfo, MembershipSnapshot
from grainery.client.sync import SyncGrainClient

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
