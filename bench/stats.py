"""Pure arithmetic of the benchmark: percentiles, latency summaries, saturation and ratios."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0-100) of already sorted values; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Iterable[float], scale: float = 1000.0) -> dict[str, float | int | None]:
    """count, p50, p95, p99, max and mean of `values`, each multiplied by `scale` (s -> ms)."""
    ordered = sorted(values)
    summary: dict[str, float | int | None] = {"count": len(ordered)}
    for q in PERCENTILES:
        value = percentile(ordered, q)
        summary[f"p{q}"] = None if value is None else round(value * scale, 3)
    summary["max"] = round(ordered[-1] * scale, 3) if ordered else None
    summary["mean"] = round(sum(ordered) / len(ordered) * scale, 3) if ordered else None
    return summary


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline rounded to 3 places; None when either is missing or the baseline is 0."""
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


# A step is saturated when it no longer keeps up with what was offered.
MIN_KEEP_UP = 0.95        # achieved / offered
MAX_P99_MS = 500.0        # latency from the scheduled send time
MAX_FAILED_SHARE = 0.01   # errors and unsent requests / scheduled


def is_saturated(offered: float, achieved: float, p99_ms: float | None, failed: int,
                 scheduled: int) -> bool:
    """Tell whether an open-loop step fell behind its timetable."""
    if scheduled == 0:
        return False
    return (achieved < MIN_KEEP_UP * offered or p99_ms is None or p99_ms > MAX_P99_MS
            or failed / scheduled > MAX_FAILED_SHARE)
