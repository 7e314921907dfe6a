"""A grain's durable reminders, read from outside the cluster (``Management/ListReminders``).

Reminders are defined by grain code (``register_reminder``) or through the Management RPCs;
this lets a client (an operator's script, a test) see them: ``await cluster.reminders(type,
key)`` returns one dict per reminder with ``name``, ``period`` (seconds), ``next_due`` (Unix
seconds; None once disabled), ``delivering``, ``failures`` and ``disabled`` (the reason, or "").
"""

from __future__ import annotations

from typing import Any

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ChannelPool
from grainery.client.errors import from_rpc_error


def entry_to_dict(entry: pb.ReminderEntry) -> dict[str, Any]:
    return {"name": entry.name, "period": entry.period_seconds,
            "next_due": entry.next_due or None, "delivering": entry.delivering,
            "failures": entry.failures, "disabled": entry.disabled}


async def list_reminders(
    pool: ChannelPool, address: str, metadata: Any, grain_type: str, key: str,
    include_runtime: bool, timeout: float,
) -> list[dict[str, Any]]:
    try:
        reply = await pool.get(address).management.ListReminders(
            pb.ListRemindersRequest(grain_type=grain_type, grain_key=key,
                                    include_runtime=include_runtime),
            timeout=timeout, metadata=metadata,
        )
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    return [entry_to_dict(e) for e in reply.reminders]
