"""What a stream, an event and a token may be, and where each lives in Redis.

The bounds every entry point (grain API, gRPC, CLI, the Python client before it sends)
shares live in client/streams.py, so a bad namespace, key or event gets the same clear
INVALID_ARGUMENT from each, before it touches the store. Tokens are the store's stream
entry ids (``"<ms>-<seq>"``): increasing per stream, comparable as integer pairs.

Key layout: every key of the streams in one partition shares a Redis Cluster hash tag
(``{<cluster>:streams:<partition>}``), so one Lua script can check the partition's lease and
move a position atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from grainery.client.errors import InvalidArgumentsError
from grainery.client.streams import (
    MAX_EVENT_BYTES,
    MAX_KEY_CHARS,
    MAX_NAMESPACE_CHARS,
    check_event_json,
    check_stream_names,
    event_to_json,
)
from grainery.silo.cluster.partitions import partition_of

PARTITIONS = 32  # fixed for a cluster: every silo must agree on a stream's partition
PREFIX = "grainery"


@dataclass(frozen=True)
class StreamId:
    namespace: str
    key: str

    @cached_property
    def name(self) -> str:
        """The stream's name in indexes and key names: unambiguous whatever the strings hold
        (kept: every key of the stream is built from it)."""
        return json.dumps([self.namespace, self.key], separators=(",", ":"))

    @classmethod
    def from_name(cls, name: str) -> StreamId:
        namespace, key = json.loads(name)
        return cls(str(namespace), str(key))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.key}"


def check_stream(namespace: object, key: object) -> StreamId:
    """A valid stream id, or InvalidArgumentsError saying what is wrong."""
    check_stream_names(namespace, key)
    return StreamId(str(namespace), str(key))


def encode_event(event: Any) -> str:
    """A Python value as event JSON (refused, like call arguments, if JSON cannot hold it)."""
    return check_event_json(event_to_json(event))


def token_order(token: str) -> tuple[int, int]:
    """A token as a comparable pair; ValueError if it is not ``<ms>-<seq>`` (or ``<ms>``)."""
    ms, _, seq = token.partition("-")
    return int(ms), int(seq or 0)


def check_token(token: str) -> str:
    """A resume point a caller sent: a token, "0" (the oldest retained) or "" (now)."""
    if token in ("", "0"):
        return token
    try:
        ms, seq = token_order(token)
    except ValueError:
        raise InvalidArgumentsError(f"not a stream token: {token[:64]!r} "
                                    f"(tokens look like 1700000000000-0)") from None
    if ms < 0 or seq < 0:
        raise InvalidArgumentsError(f"not a stream token: {token[:64]!r}")
    return f"{ms}-{seq}"


def token_millis(token: str) -> int:
    """When the store accepted the event (its clock, milliseconds since the epoch)."""
    return token_order(token)[0]


class StreamKeys:
    """Key names of one cluster's streams."""

    def __init__(self, cluster: str, partitions: int = PARTITIONS) -> None:
        self.cluster = cluster
        self.partitions = partitions

    def partition(self, stream: StreamId) -> int:
        return partition_of(stream.name, self.partitions)

    def _tag(self, partition: int) -> str:
        return f"{PREFIX}:{{{self.cluster}:streams:{partition}}}"

    def events(self, stream: StreamId) -> str:
        """The Redis stream holding the events."""
        return f"{self._tag(self.partition(stream))}:events:{stream.name}"

    def subscribers(self, stream: StreamId) -> str:
        """Hash: explicit subscriber (``["Type","key"]``) -> "1"."""
        return f"{self._tag(self.partition(stream))}:subscribers:{stream.name}"

    def positions(self, stream: StreamId) -> str:
        """Hash: subscriber -> token of the last event its hook returned for."""
        return f"{self._tag(self.partition(stream))}:positions:{stream.name}"

    def index(self, partition: int) -> str:
        """Set of the names of the partition's streams (published to or subscribed to)."""
        return f"{self._tag(partition)}:index"

    def bell(self, partition: int) -> str:
        """A short Redis stream of "this stream changed" notes (new stream, subscriptions),
        read by the pump of the partition alongside the events."""
        return f"{self._tag(partition)}:bell"

    def lease(self, partition: int) -> str:
        """Which silo incarnation pumps the partition (SET NX PX, renewed)."""
        return f"{self._tag(partition)}:lease"

    def dead_letters(self, namespace: str) -> str:
        """A capped Redis stream of the events a subscriber's hook kept failing on."""
        return f"{PREFIX}:{{{self.cluster}}}:streams:dead-letters:{namespace}"


def subscriber_field(grain_type: str, key: str) -> str:
    return json.dumps([grain_type, key], separators=(",", ":"))


def parse_subscriber(field: str | bytes) -> tuple[str, str]:
    grain_type, key = json.loads(field)
    return str(grain_type), str(key)


__all__ = [
    "MAX_EVENT_BYTES", "MAX_KEY_CHARS", "MAX_NAMESPACE_CHARS", "PARTITIONS", "StreamId",
    "StreamKeys", "check_event_json", "check_stream", "check_token", "encode_event",
    "parse_subscriber", "subscriber_field", "token_millis", "token_order",
]
