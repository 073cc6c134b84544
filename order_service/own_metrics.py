"""OrderService's own metrics (orders placed, completed, and how long they took) beside the shared
ones; the names are part of the metrics contract (docs/operations.md, "Metrics")."""
from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

from messaging.observability import metrics
from messaging.observability.batch_meters import observe_many

STATUSES = ("reserved", "failed")


class OrderMetrics:
    """orders_placed, orders_replayed, orders_completed{status}, order_completion_seconds and
    orders_rate_limited{key}."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.placed = Counter("orders_placed", "Orders accepted with a 202", registry=registry)
        self.completed = Counter("orders_completed", "Orders moved to their final status",
                                 ["status"], registry=registry)
        self.completion = Histogram("order_completion_seconds",
                                    "From the 202 to the final status being committed",
                                    buckets=metrics.LATENCY_BUCKETS, registry=registry)
        self.by_status = {status: self.completed.labels(status) for status in STATUSES}
        self.replayed = Counter("orders_replayed", "POST /order retries answered with the order "
                                "their Idempotency-Key placed before", registry=registry)
        self.rate_limited = Counter("orders_rate_limited", "POST /order refused with a 429 by "
                                    "RATE_LIMIT_ORDERS, by what the budget was keyed on",
                                    ["key"], registry=registry)


def configure(enabled: bool, multiprocess: bool = False,
              registry: CollectorRegistry | None = None) -> metrics.Metrics | None:
    """Make OrderService's metrics: the shared ones, the outbox's, and the orders'."""
    return metrics.configure(enabled, outbox=True, own=OrderMetrics, multiprocess=multiprocess,
                             registry=registry)


def order_placed() -> None:
    own: OrderMetrics | None = metrics.own()
    if own:
        own.placed.inc()


def order_replayed() -> None:
    own: OrderMetrics | None = metrics.own()
    if own:
        own.replayed.inc()


def order_rate_limited(key: str) -> None:
    """Count a POST /order refused by the rate limit; `key` is `user` or `address`."""
    own: OrderMetrics | None = metrics.own()
    if own:
        own.rate_limited.labels(key).inc()


def orders_completed(completed: list[tuple[str, str]]) -> None:
    """Count orders moved to their final status, given as (status, created_at ISO UTC), and
    observe the time since each was created."""
    own: OrderMetrics | None = metrics.own()
    if not own or not completed:
        return
    for status in STATUSES:
        count = sum(1 for final, _ in completed if final == status)
        if count:
            own.by_status[status].inc(count)
    now = time.time()
    observe_many(own.completion, [
        max(0.0, now - datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        for _, created in completed])
