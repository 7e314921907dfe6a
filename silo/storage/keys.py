"""Redis key names.

Per-grain keys share a Redis Cluster hash tag (``{type/key}``) so one grain's
directory entry and state live in one slot, and a single Lua script can check
both atomically. Per-cluster keys (membership, and the index of which grains each
silo incarnation registered, so dead silos' entries are swept without scanning the
keyspace) share the cluster's tag.
"""

from __future__ import annotations

from grainery.client.routing import GrainId

PREFIX = "grainery"


class KeySpace:
    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.members = f"{PREFIX}:{{{cluster}}}:members"
        self.members_version = f"{PREFIX}:{{{cluster}}}:members:version"
        self.members_channel = f"{PREFIX}:{{{cluster}}}:members:changed"
        # The set of incarnations that have (or had) an index of registered grains.
        self.indexed_incarnations = f"{PREFIX}:{{{cluster}}}:registrants"
        # The secret silos prove they belong to the cluster with (system calls).
        self.system_key = f"{PREFIX}:{{{cluster}}}:system-key"

    def registered_by(self, incarnation: str) -> str:
        """The set of grains (``type/key`` JSON pairs) one silo incarnation registered."""
        return f"{PREFIX}:{{{self.cluster}}}:registered:{incarnation}"

    def _grain(self, grain: GrainId) -> str:
        return f"{PREFIX}:{self.cluster}:{{{grain.grain_type}/{grain.key}}}"

    def state(self, grain: GrainId) -> str:
        return self._grain(grain) + ":state"

    def directory(self, grain: GrainId) -> str:
        return self._grain(grain) + ":dir"

    # Durable agents (silo/journal/): the grain's journal (a stream) and its index (a hash:
    # sequence counter, unfinished runs, buffered signals), in the grain's slot, so one Lua
    # script checks the directory entry (fencing) and appends atomically.
    def journal(self, grain: GrainId) -> str:
        return self._grain(grain) + ":journal"

    def journal_index(self, grain: GrainId) -> str:
        return self._grain(grain) + ":journal:index"

    def journal_signal_ids(self, grain: GrainId) -> str:
        """A sorted set: the ids of the grain's latest signals, scored by their entry's seq
        (a retried signal with a known id is not recorded again)."""
        return self._grain(grain) + ":journal:signal-ids"
