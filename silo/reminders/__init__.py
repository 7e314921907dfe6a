"""Durable reminders: schedules kept in Redis that fire a grain's hook, activating it if needed.

- ``model``: the public values (``ReminderTick``, ``ReminderInfo``), limits and validation, and
  the pure scheduling rules (the next due time, retry backoff);
- ``keys`` and ``scripts``: where a reminder lives in Redis and the Lua that claims, advances,
  registers and unregisters it atomically;
- ``store``: the Redis operations; ``registry``: what grain code and the Management RPCs call;
- ``service``: the loop of one silo that finds due reminders in the partitions it owns on the
  ring, claims them and delivers them as system calls;
- ``runtime``: the ``$``-reminders the runtime itself registers (durable agents);
- ``cli`` and ``rpc``: ``grainery reminders`` and the Management RPCs.
"""
