"""Rates and latency percentiles from sampled Prometheus counters and histogram buckets.

Pure functions, so the arithmetic the charts rest on is tested without a silo. Percentiles
are estimated as Prometheus's ``histogram_quantile`` does: linear inside the bucket that
holds the rank, so a value is never outside its bucket's bounds.
"""

from __future__ import annotations

from collections.abc import Sequence


def percentile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q``-quantile (0..1) of calls counted per bucket; None when there were none.

    ``counts`` has one entry per bound (calls at most that many seconds, above the previous
    bound) plus a last one for slower calls; a rank in that last bucket is reported as the
    highest bound (nothing better is known)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for index, count in enumerate(counts):
        upper = bounds[index] if index < len(bounds) else None
        if count and seen + count >= rank:
            if upper is None:
                return lower
            return lower + (upper - lower) * max(0.0, rank - seen) / count
        seen += count
        if upper is not None:
            lower = upper
    return lower


def deltas(previous: Sequence[float], current: Sequence[float]) -> list[int]:
    """Per-bucket increases between two cumulative samples; a counter that went down (the
    process restarted, a series was removed) counts from zero."""
    out: list[int] = []
    for index, now in enumerate(current):
        before = previous[index] if index < len(previous) else 0.0
        out.append(int(now - before) if now >= before else int(now))
    return out


def cumulative_to_buckets(cumulative: Sequence[float]) -> list[float]:
    """Prometheus ``le`` buckets are cumulative; the charts want counts per bucket."""
    out: list[float] = []
    below = 0.0
    for value in cumulative:
        out.append(value - below)
        below = value
    return out
