"""Retention by age: the silo that pumps a partition trims its streams' old events.

Length is bounded at every publish (``XADD ... MAXLEN ~ --stream-maxlen``); age, when
``--stream-max-age`` is set, by this loop (``XTRIM ... MINID ~``), so a publish never pays
for it. Trimming is approximate (whole internal nodes), so a stream may keep a little more
than the bound, never less. A subscriber that lags past the retained window resumes at the
oldest retained event: retention bounds what a subscriber can catch up on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from redis.exceptions import RedisError

from grainery.silo.streams.store import StreamStore

log = logging.getLogger("grainery.streams")


async def trim_by_age(store: StreamStore, partitions: Iterable[int], max_age: float) -> int:
    """Trim every stream of ``partitions`` to the events younger than ``max_age`` seconds;
    returns how many events were removed."""
    cutoff = int((time.time() - max_age) * 1000)
    removed = 0
    for partition in list(partitions):
        for stream in await store.streams_of(partition):
            removed += await store.trim_before(stream, cutoff)
    return removed


async def run_retention(
    store: StreamStore, held: Callable[[], Iterable[int]], max_age: float,
) -> None:
    """Forever: trim the held partitions' streams, every quarter of ``max_age`` (at most a
    minute apart)."""
    period = min(max(max_age / 4, 0.5), 60.0)
    while True:
        await asyncio.sleep(period)
        try:
            removed = await trim_by_age(store, held(), max_age)
        except RedisError as exc:
            log.warning("stream retention: store error, trying again later: %s", exc)
            continue
        if removed:
            log.debug("stream retention: trimmed %d events older than %.0fs", removed, max_age)
