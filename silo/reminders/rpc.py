"""The Management RPCs for reminders (``ListReminders``, ``RegisterReminder``,
``UnregisterReminder``): the wire <-> :class:`Reminders`, with clear status codes.

Any silo answers for any grain (reminders live in the store, not in an activation). The grain
type must be one this silo hosts (NOT_FOUND otherwise), so a typo is not stored as a reminder
no silo could deliver. Names starting with ``$`` belong to the runtime: refused here.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.errors import InvalidArgumentsError, StorageUnavailableError
from grainery.silo.registry import GrainRegistry
from grainery.silo.reminders.model import ReminderInfo
from grainery.silo.reminders.registry import Reminders

MAX_KEY_CHARS = 1024


def to_entry(info: ReminderInfo) -> pb.ReminderEntry:
    return pb.ReminderEntry(
        name=info.name, period_seconds=info.period, next_due=info.next_due or 0.0,
        delivering=info.delivering, failures=info.failures, disabled=info.disabled,
    )


class ReminderRpcs:
    def __init__(self, reminders: Reminders, registry: GrainRegistry) -> None:
        self._reminders = reminders
        self._registry = registry

    def _check_grain(self, grain_type: str, key: str) -> None:
        self._registry.get(grain_type)  # UnknownGrainTypeError: NOT_FOUND
        if len(key) > MAX_KEY_CHARS:
            raise InvalidArgumentsError(f"grain key longer than {MAX_KEY_CHARS} characters")

    async def list(self, request: pb.ListRemindersRequest) -> pb.ListRemindersResponse:
        self._check_grain(request.grain_type, request.grain_key)
        try:
            found = await self._reminders.listing(
                request.grain_type, request.grain_key, request.include_runtime
            )
        except RedisError as exc:
            raise StorageUnavailableError(f"could not read reminders: {exc}") from None
        return pb.ListRemindersResponse(reminders=[to_entry(r) for r in found])

    async def register(self, request: pb.RegisterReminderRequest) -> pb.RegisterReminderResponse:
        self._check_grain(request.grain_type, request.grain_key)
        try:
            first = await self._reminders.register(
                request.grain_type, request.grain_key, request.name, request.due_seconds,
                request.period_seconds,
            )
        except ValueError as exc:
            raise InvalidArgumentsError(str(exc)) from None
        except RedisError as exc:
            raise StorageUnavailableError(f"could not register the reminder: {exc}") from None
        return pb.RegisterReminderResponse(first_due=first)

    async def unregister(
        self, request: pb.UnregisterReminderRequest
    ) -> pb.UnregisterReminderResponse:
        self._check_grain(request.grain_type, request.grain_key)
        try:
            removed = await self._reminders.unregister(
                request.grain_type, request.grain_key, request.name
            )
        except ValueError as exc:
            raise InvalidArgumentsError(str(exc)) from None
        except RedisError as exc:
            raise StorageUnavailableError(f"could not unregister the reminder: {exc}") from None
        return pb.UnregisterReminderResponse(removed=removed)
