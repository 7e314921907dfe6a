"""Reaching a grain's durable runs from outside: the Management RPCs Journal, Signal,
RunStatus and CancelRun.

The journal is read straight from Redis by whichever silo the client asked (reading needs no
activation and changes nothing). Signals, cancellation and status go to the grain itself, as
system calls of its hooks ``on_durable_signal``/``on_durable_cancel``/``on_durable_status``
(silo/hooks.py): they reach the grain wherever it lives, activate it if it is not (which also
resumes an unfinished run), and append to the journal with the activation's fence, like
everything the grain writes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.errors import InvalidArgumentsError
from grainery.client.routing import GrainId
from grainery.silo.durable.decorator import durable_methods
from grainery.silo.durable.runtime import MAX_SIGNAL_ID, DurableRuntime, runtime_of
from grainery.silo.journal.store import MAX_READ, RedisJournalStore
from grainery.silo.registry import GrainRegistry

if TYPE_CHECKING:
    from grainery.silo.grain import Grain
    from grainery.silo.system_calls import SystemCalls

log = logging.getLogger("grainery.durable")

CONTROL_TIMEOUT = 30.0  # seconds for a signal, cancel or status call without a deadline
MAX_WAIT = 300.0  # seconds RunStatus may wait for a run to end


def durable_runtime(grain: Grain) -> DurableRuntime:
    """The grain's durable runtime; a TypeError for a type without ``@durable`` methods."""
    if not durable_methods(type(grain)):
        raise TypeError(f"grain type {grain._ctx.grain_id.grain_type!r} has no @durable "
                        f"methods: it has no runs, signals or cancellation")
    return runtime_of(grain)


class DurableControl:
    """The servicer side of the four RPCs (ManagementServicer delegates here)."""

    def __init__(self, registry: GrainRegistry, journal: RedisJournalStore,
                 system_calls: SystemCalls) -> None:
        self._registry = registry
        self._journal = journal
        self._system_calls = system_calls

    def _grain(self, grain_type: str, key: str) -> GrainId:
        self._registry.get(grain_type)  # UnknownGrainTypeError for an unknown type
        if not key:
            raise InvalidArgumentsError("grain_key is required")
        return GrainId(grain_type, key)

    async def journal(self, request: pb.JournalRequest) -> pb.JournalResponse:
        grain = self._grain(request.grain_type, request.grain_key)
        limit = min(request.limit or 100, MAX_READ)
        entries = await self._journal.read(grain, request.after, limit)
        return pb.JournalResponse(entries=[
            pb.JournalEntry(seq=e.seq, kind=e.kind, data_json=orjson.dumps(e.data).decode(),
                            time_ms=e.time_ms)
            for e in entries
        ])

    async def signal(self, request: pb.SignalRequest, timeout: float | None
                     ) -> pb.SignalResponse:
        grain = self._grain(request.grain_type, request.grain_key)
        if not request.name:
            raise InvalidArgumentsError("a signal needs a name")
        if len(request.signal_id) > MAX_SIGNAL_ID:
            raise InvalidArgumentsError(
                f"a signal id is at most {MAX_SIGNAL_ID} characters, not {len(request.signal_id)}")
        payload = _json(request.payload_json, "payload_json")
        # The id only when there is one: a silo of the previous release takes two arguments.
        args = [request.name, payload] + ([request.signal_id] if request.signal_id else [])
        seq = await self._system_calls.call(
            grain.grain_type, grain.key, "on_durable_signal", args, timeout or CONTROL_TIMEOUT,
        )
        return pb.SignalResponse(seq=int(seq))

    async def status(self, request: pb.RunRequest, timeout: float | None) -> pb.RunResponse:
        grain = self._grain(request.grain_type, request.grain_key)
        wait = max(0.0, min(request.wait, MAX_WAIT))
        budget = timeout or CONTROL_TIMEOUT
        if wait:
            wait = min(wait, max(0.0, budget - 1.0))
        result = await self._system_calls.call(
            grain.grain_type, grain.key, "on_durable_status", [int(request.run), wait], budget,
        )
        return pb.RunResponse(status_json=orjson.dumps(result).decode())

    async def cancel(self, request: pb.RunRequest, timeout: float | None) -> pb.RunResponse:
        grain = self._grain(request.grain_type, request.grain_key)
        result = await self._system_calls.call(
            grain.grain_type, grain.key, "on_durable_cancel",
            [int(request.run), request.reason[:1000]], timeout or CONTROL_TIMEOUT,
        )
        return pb.RunResponse(status_json=orjson.dumps(result).decode())


def _json(text: str, field: str) -> Any:
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentsError(f"{field} is not valid JSON: {exc}") from None
