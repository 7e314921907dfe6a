"""Where reminders live in Redis (all under the cluster's hash tag, so every script's keys
share one slot).

Per partition ``p`` (silo/cluster/partitions.py; a reminder's partition is that of its grain,
``"Type/key"``):
- ``due:p``: sorted set, member = the reminder (``model.member_of``), score = the next due
  time in ms, or, while a silo delivers it, that silo's claim deadline;
- ``defs:p``: hash, member -> ``"period_ms|failures|disabled reason"``;
- ``claims:p``: hash, member -> ``"scheduled_ms|attempt|incarnation"`` while a tick is claimed.
Per grain: ``grain:<partition>:<Type/key as JSON>``: the set of its reminder names (listing
and the per-grain limit, without scanning).
Per cluster: ``heads``: sorted set, member = partition, score = the earliest score in its
``due`` set, so one command tells a silo which partitions have anything due.
"""

from __future__ import annotations

import json

from grainery.silo.storage.keys import PREFIX


class ReminderKeys:
    def __init__(self, cluster: str) -> None:
        self._base = f"{PREFIX}:{{{cluster}}}:reminders"
        self.heads = f"{self._base}:heads"

    def due(self, partition: int) -> str:
        return f"{self._base}:due:{partition}"

    def defs(self, partition: int) -> str:
        return f"{self._base}:defs:{partition}"

    def claims(self, partition: int) -> str:
        return f"{self._base}:claims:{partition}"

    def grain(self, partition: int, grain_type: str, key: str) -> str:
        grain = json.dumps([grain_type, key], separators=(",", ":"), ensure_ascii=False)
        return f"{self._base}:grain:{partition}:{grain}"
