"""Runtime hooks: grain methods that the runtime calls, never a client.

A hook (``receive_reminder``, ``on_stream_event``, ...) is an ``async def`` a grain class
may define; it runs as a turn of the grain like any call, but it is not in the grain's
callable method table, so no client can reach it. The runtime reaches it with a *system
call* (silo/system_calls.py): from the silo that serves the reminder or the stream to the
grain's activation, wherever that is. Between silos a system call carries the cluster's
system key (silo/cluster/system_key.py), which clients never have.

A feature that adds a hook adds its name here, and only here.
"""

from __future__ import annotations

HOOK_NAMES: frozenset[str] = frozenset({
    "receive_reminder",  # reminders (silo/reminders/)
    "on_runtime_reminder",  # the runtime's own "$" reminders (silo/reminders/runtime.py)
    "on_stream_event",  # streams (silo/streams/)
    "on_durable_signal",  # durable agents (silo/durable/control.py)
    "on_durable_cancel",
    "on_durable_status",
    "_deliver_stream_events",  # streams: a batch of on_stream_event in one turn (Grain's own)
})
