"""Streams inside a grain: ``self.get_stream(ns, key).publish(event)``, ``self.subscribe``,
``self.unsubscribe`` (thin methods of ``Grain`` that land here).

A grain reaches its silo's stream service by the hosting silo's id: the runtime registers
the service under it while the silo runs, so the grain base class and the catalog need no
wiring for streams.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from grainery.client.errors import GrainApplicationError, GrainError
from grainery.silo.streams.names import StreamId, check_stream, encode_event
from grainery.silo.streams.subscriptions import HOOK

if TYPE_CHECKING:
    from grainery.silo.grain import Grain
    from grainery.silo.streams.service import StreamService

_SERVICES: dict[str, StreamService] = {}
# The runtime hook (silo/hooks.py) the pump calls with a batch of a stream's events.
BATCH_HOOK = "_deliver_stream_events"


def register_service(silo_id: str, service: StreamService) -> None:
    _SERVICES[silo_id] = service


def unregister_service(silo_id: str, service: StreamService) -> None:
    if _SERVICES.get(silo_id) is service:
        del _SERVICES[silo_id]


def service_of(grain: Grain) -> StreamService:
    service = _SERVICES.get(grain.silo_id)
    if service is None:
        raise RuntimeError(f"streams are not running on silo {grain.silo_id}")
    return service


class GrainStream:
    """A stream as a grain sees it: ``token = await stream.publish(event)``."""

    __slots__ = ("_service", "stream")

    def __init__(self, service: StreamService, stream: StreamId) -> None:
        self._service = service
        self.stream = stream

    @property
    def namespace(self) -> str:
        return self.stream.namespace

    @property
    def key(self) -> str:
        return self.stream.key

    async def publish(self, event: Any) -> str:
        """Append ``event`` (a JSON-serialisable value, at most MAX_EVENT_BYTES as JSON);
        returns its token. Durable in the store once this returns."""
        return await self._service.publish(self.stream, encode_event(event))


def get_stream(grain: Grain, namespace: str, key: str) -> GrainStream:
    return GrainStream(service_of(grain), check_stream(namespace, key))


async def subscribe(grain: Grain, namespace: str, key: str) -> bool:
    """Subscribe ``grain`` to the stream from its current end; False if it already was."""
    hook = getattr(type(grain), HOOK, None)
    if hook is None or not inspect.iscoroutinefunction(hook):
        raise TypeError(f"{type(grain).__qualname__} cannot subscribe to a stream: it needs "
                        f"`async def {HOOK}(self, namespace, key, event, token)`")
    stream = check_stream(namespace, key)
    return await service_of(grain).subscribe(grain.grain_type, grain.key, stream)


async def unsubscribe(grain: Grain, namespace: str, key: str) -> bool:
    """End ``grain``'s explicit subscription; False if there was none."""
    stream = check_stream(namespace, key)
    return await service_of(grain).unsubscribe(grain.grain_type, grain.key, stream)


class StreamBatchInterrupted(Exception):
    """A hook raised in the middle of a delivery: the turn fails (so ``self.state`` is as
    after any failed turn), and the message tells the pump how many events before it were
    handled: ``"<done> <ExceptionType>: <message>"``."""

    def __init__(self, done: int, error: BaseException) -> None:
        super().__init__(f"{done} {type(error).__name__}: {str(error)[:900]}")


async def deliver_events(grain: Grain, namespace: str, key: str,
                         events: list[list[str]]) -> int:
    """Run ``on_stream_event`` for each ``[token, event JSON]``, in order, in this turn."""
    hook = getattr(grain, HOOK, None)
    if hook is None:
        raise TypeError(f"{type(grain).__qualname__} has no {HOOK}: it cannot take events")
    for done, (token, event_json) in enumerate(events):
        try:
            await hook(namespace, key, json.loads(event_json), token)
        except Exception as error:
            raise StreamBatchInterrupted(done, error) from error
    return len(events)


def interrupted_at(error: GrainError) -> tuple[int, str]:
    """From a failed delivery call: how many events were handled before the failure, and
    the failure as ``"ExceptionType: message"``."""
    if isinstance(error, GrainApplicationError) and error.error_type == "StreamBatchInterrupted":
        count, _, cause = error.message.partition(": ")[2].partition(" ")
        if count.isdigit():
            return int(count), cause
    return 0, f"{type(error).__name__}: {error.message}"
