"""``Grain.journal``: the grain's own append-only, fenced journal (its audit trail).

Bound to one activation: every append names the activation's id, so the store refuses it
once the grain lives elsewhere (:class:`ActivationFencedError`). Durable runs (silo/durable/)
write their records through the same object; user code may add its own entries (messages,
decisions) beside them. Kinds starting with ``$`` are the runtime's (durable runs): user
code may read them, not write them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grainery.silo.journal.store import JournalEntry, encode_data

if TYPE_CHECKING:
    from grainery.silo.activation import ActivationContext
    from grainery.silo.journal.store import RedisJournalStore

DEFAULT_MAX_ENTRIES = 1000
MAX_KIND = 200


class JournalUnavailableError(RuntimeError):
    """This activation has no journal: a stateless worker (no directory entry to fence
    with), or a silo wired without a journal store (in-process test twins)."""


class Journal:
    __slots__ = ("_context", "_max_entries", "_store")

    def __init__(self, context: ActivationContext, max_entries: int) -> None:
        store: RedisJournalStore | None = getattr(context, "journal_store", None)
        if store is None or not context.fence.activation:
            raise JournalUnavailableError(
                f"{context.grain_id} has no journal (stateless workers have none, and this "
                f"silo was started without a journal store)"
            )
        self._context = context
        self._store = store
        self._max_entries = max_entries

    async def append(self, kind: str, data: Any = None) -> int:
        """Append ``(kind, data)`` (data: anything JSON holds); returns the entry's sequence
        number once it is stored. Raises ActivationFencedError from a superseded activation
        (nothing is written) and StorageUnavailableError if the store did not answer."""
        if not isinstance(kind, str) or not kind or len(kind) > MAX_KIND:
            raise ValueError(f"journal kind must be a non-empty str of at most {MAX_KIND} "
                             f"characters, not {kind!r}")
        if kind.startswith("$"):
            raise ValueError(f"journal kinds starting with '$' are the runtime's: {kind!r}")
        return await self.record(kind, data)

    async def record(
        self, kind: str, data: Any, mark: str = "", mark_value: str = "",
        unmark: tuple[str, ...] = (),
    ) -> int:
        """The runtime's append (any kind, with index marks): see RedisJournalStore.append."""
        return await self._store.append(
            self._context.grain_id, self._context.fence.activation, kind, encode_data(data),
            self._max_entries, mark, mark_value, unmark,
        )

    async def record_once(
        self, kind: str, data: Any, once_id: str, mark: str = "", mark_value: str = "",
    ) -> tuple[int, bool]:
        """``record`` unless an entry with ``once_id`` was recorded among the grain's latest
        signals: (its seq, whether this call recorded it). See RedisJournalStore.append_once."""
        return await self._store.append_once(
            self._context.grain_id, self._context.fence.activation, kind, encode_data(data),
            self._max_entries, mark, mark_value, (), once_id,
        )

    async def read(self, after: int = 0, limit: int = 100) -> list[JournalEntry]:
        """Entries with ``seq > after``, oldest first, at most ``limit`` (up to 1000)."""
        return await self._store.read(self._context.grain_id, after, limit)

    async def read_all(self, after: int = 0) -> list[JournalEntry]:
        """Every entry after ``after`` (paged reads; bounded by the retention policy)."""
        entries: list[JournalEntry] = []
        while True:
            page = await self._store.read(self._context.grain_id, after, 1000)
            entries += page
            if len(page) < 1000:
                return entries
            after = page[-1].seq

    async def index(self) -> dict[str, str]:
        return await self._store.index(self._context.grain_id)

    async def last(self, count: int) -> list[JournalEntry]:
        return await self._store.last(self._context.grain_id, count)
