"""The meters the hot paths hold: counters and histograms bound to their labels once, written once
per batch (see messaging.observability.metrics, which makes them)."""
from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from messaging.observability.metrics import Metrics


class QueueMeter:
    """The consume loop's counters for one queue, bound to it once."""

    def __init__(self, m: Metrics, queue: str) -> None:
        self._consumed = m.consumed.labels(queue)
        self._handling = m.handling.labels(queue)
        self._retries = m.retries.labels(queue)

    def settled(self, acked: int, started: float) -> None:
        """Count `acked` deliveries settled by one batch that began at `started` (monotonic)."""
        if acked:
            self._consumed.inc(acked)
            observe_many(self._handling, [time.monotonic() - started] * acked)

    def retried(self) -> None:
        self._retries.inc()


class PublishMeter:
    """The relay's counters: confirms by exchange, refusals by exchange and reason."""

    def __init__(self, m: Metrics) -> None:
        self._m = m
        self._published: dict[str, Counter] = {}

    def settled(self, confirmed: list[tuple[str, float]], refused: list[tuple[str, str]]) -> None:
        """Count confirmed (exchange, published at) and refused (exchange, reason) messages."""
        now = time.monotonic()
        by_exchange: dict[str, int] = {}
        for exchange, _ in confirmed:
            by_exchange[exchange] = by_exchange.get(exchange, 0) + 1
        for exchange, count in by_exchange.items():
            child = self._published.get(exchange)
            if child is None:
                child = self._published[exchange] = self._m.published.labels(exchange)
            child.inc(count)
        observe_many(self._m.publish_confirm, [now - sent for _, sent in confirmed])
        for exchange, reason in refused:
            self._m.publish_refused.labels(exchange, reason).inc()


class Off:
    """Stands in for a meter when metrics are off."""

    def settled(self, *args: object) -> None:
        pass

    def retried(self) -> None:
        pass


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """Observe every amount, writing the sum and each bucket touched once rather than once per
    amount: in multiprocess mode each write is a write to a shared file.

    Uses the Histogram's `_sum`, `_buckets` and `_upper_bounds` (prometheus_client is pinned;
    tests/unit/test_metrics.py compares the result with `observe`).
    """
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1  # the first bucket with amount <= its bound
        total += amount
    if not any(counts):
        return
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
