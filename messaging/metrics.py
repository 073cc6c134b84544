"""Prometheus metrics: every name the services export, and the hooks the shared core calls.

The names are a contract that dashboards and alerts depend on (README, "Metrics"). The metrics are
made by `configure()` at start-up, not at import: OrderService's gunicorn workers must first be
pointed at the multiprocess directory, so that each worker's counts are kept in files and summed
at scrape time (`messaging.exposition`). Until `configure(True, ...)` runs, or with METRICS=off,
every hook is a no-op. The hot paths get children bound to their labels once (`queue_meter`,
`publish_meter`), so a batch costs a few increments and no label lookups.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.metrics_core import Metric

# Seconds; from a fast local confirm to a backlog drained after an outage.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 300.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "<unmatched>"  # the route label of a request no route matched (404, 405)
STATUSES = ("reserved", "failed")
OUTBOX_SERVICES = ("order-service", "inventory-service")  # the services with an outbox relay


class Collector(Protocol):
    """Reports gauges at scrape time (see messaging.exposition)."""

    def collect(self) -> Iterator[Metric]: ...


class Metrics:
    """Every metric of one process; `registry` None in multiprocess mode (read from files)."""

    def __init__(self, registry: CollectorRegistry | None, service: str = "") -> None:
        r = registry
        self.registry = registry
        if service == "order-service":
            self.orders_placed = Counter("orders_placed", "Orders accepted with a 202", registry=r)
            self.orders_completed = Counter(
                "orders_completed", "Orders moved to their final status", ["status"], registry=r)
            self.order_completion = Histogram(
                "order_completion_seconds", "From the 202 to the final status being committed",
                buckets=LATENCY_BUCKETS, registry=r)
            self.completed = {s: self.orders_completed.labels(s) for s in STATUSES}
        if service == "notification-service":
            self.notifications = Counter("notifications_sent", "Notifications sent", registry=r)
        if service in OUTBOX_SERVICES:
            self._outbox_metrics(r)
        self.consumed = Counter("messages_consumed", "Deliveries settled and acknowledged "
                                "(handled, duplicate or dead-lettered)", ["queue"], registry=r)
        self.duplicates = Counter("messages_duplicate", "Deliveries recognised as already handled",
                                  ["queue"], registry=r)
        self.dead_lettered = Counter("messages_dead_lettered", "Deliveries dead-lettered to dlx",
                                     ["queue", "reason"], registry=r)
        self.dead_letters_refused = Counter(
            "dead_letters_refused", "Dead letters the broker refused; the delivery was put back",
            ["queue", "reason"], registry=r)
        self.retries = Counter("message_handling_retries", "Transient handling failures retried",
                               ["queue"], registry=r)
        self.handling = Histogram("message_handling_seconds", "From taking a batch to acking it, "
                                  "once per message", ["queue"], buckets=LATENCY_BUCKETS, registry=r)
        self.connected = Gauge("broker_connected", "1 when every broker connection of the process "
                               "is up", registry=r, multiprocess_mode="livemin")
        self.reconnects = Counter("broker_reconnects", "Broker connections made again after one "
                                  "was lost", registry=r)
        self.http_requests = Counter("http_requests", "HTTP requests answered",
                                     ["method", "route", "status"], registry=r)
        self.http_duration = Histogram("http_request_duration_seconds", "HTTP request duration",
                                       ["route"], buckets=HTTP_BUCKETS, registry=r)
        self.collectors: list[Collector] = []  # scrape-time gauges (messaging.exposition.watch)
        self.http_children: dict[tuple[str, str | None, int], tuple] = {}
        self._links: dict[str, bool] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _outbox_metrics(self, r: CollectorRegistry | None) -> None:
        self.published = Counter("messages_published", "Outbox messages the broker confirmed",
                                 ["exchange"], registry=r)
        self.publish_refused = Counter(
            "messages_publish_refused", "Outbox publishes the broker nacked or returned as "
            "unroutable (the row stays in the outbox and is published again)",
            ["exchange", "reason"], registry=r)
        self.publish_confirm = Histogram("publish_confirm_seconds",
                                         "From an outbox publish to the broker's confirm",
                                         buckets=LATENCY_BUCKETS, registry=r)

    def link(self, name: str, up: bool) -> None:
        """Record that the connection `name` is up or down; a second up is a reconnect."""
        with self._lock:
            if self._links.get(name) == up:
                return
            if up:
                if name in self._seen:
                    self.reconnects.inc()
                self._seen.add(name)
            self._links[name] = up
            self.connected.set(1 if all(self._links.values()) else 0)


_active: Metrics | None = None


def configure(enabled: bool, service: str = "", multiprocess: bool = False,
              registry: CollectorRegistry | None = None) -> Metrics | None:
    """Make this process's metrics (or none, when disabled); returns them."""
    global _active
    if not enabled:
        _active = None
        return None
    disable_created_metrics()  # no *_created series: they double the output and nobody reads them
    if multiprocess:  # prometheus_client picks its value class at import: pick again, now
        values.ValueClass = values.get_value_class()
    _active = Metrics(None if multiprocess else (registry or CollectorRegistry()), service)
    return _active


def active() -> Metrics | None:
    """This process's metrics, or None when they are off."""
    return _active


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


class _Off:
    """Stands in for a meter when metrics are off."""

    def settled(self, *args: object) -> None:
        pass

    def retried(self) -> None:
        pass


def queue_meter(queue: str) -> QueueMeter | _Off:
    """The consume loop's meter for `queue` (a no-op when metrics are off)."""
    return QueueMeter(_active, queue) if _active else _Off()


def publish_meter() -> PublishMeter | None:
    """The relay's meter, or None when metrics are off."""
    return PublishMeter(_active) if _active else None


def link(name: str, up: bool) -> None:
    """Record that the broker connection `name` went up or down."""
    if _active:
        _active.link(name, up)


def duplicates(queue: str, count: int) -> None:
    """Count deliveries from `queue` recognised as already handled."""
    if _active and count:
        _active.duplicates.labels(queue).inc(count)


def dead_lettered(queue: str, reason: str) -> None:
    if _active:
        _active.dead_lettered.labels(queue, reason).inc()


def dead_letter_refused(queue: str, reason: str) -> None:
    if _active:
        _active.dead_letters_refused.labels(queue, reason).inc()


def order_placed() -> None:
    if _active:
        _active.orders_placed.inc()


def orders_completed(completed: list[tuple[str, str]]) -> None:
    """Count orders moved to their final status, given as (status, created_at ISO UTC), and
    observe the time since each was created."""
    if not _active or not completed:
        return
    for status in STATUSES:
        count = sum(1 for final, _ in completed if final == status)
        if count:
            _active.completed[status].inc(count)
    now = time.time()
    observe_many(_active.order_completion, [
        max(0.0, now - datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        for _, created in completed])


def notifications_sent(count: int) -> None:
    if _active and count:
        _active.notifications.inc(count)


def http_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """Count one HTTP request by its route pattern (never the raw path) and status."""
    if _active:
        children = _active.http_children.get((method, route, status))
        if children is None:  # the label lookups once per (method, route, status), not per request
            label = route or UNMATCHED
            children = _active.http_children[(method, route, status)] = (
                _active.http_requests.labels(method, label, str(status)),
                _active.http_duration.labels(label))
        children[0].inc()
        children[1].observe(seconds)


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
