"""Prometheus metrics: the names the shared core exports, and the hooks it calls.

The names are a contract that dashboards and alerts depend on (docs/operations.md, "Metrics"). Every process
has the consumer, broker and HTTP metrics; a process with an outbox relay has the publishing ones
too; and a service adds its own families (`own`, made in the service's own_metrics.py). The
metrics are made by `configure()` at start-up, not at import: a gunicorn service's workers must
first be pointed at the multiprocess directory, so that each worker's counts are kept in files and
summed at scrape time (`messaging.observability.exposition`). Until `configure(True, ...)` runs,
or with METRICS=off, every hook is a no-op. The hot paths get children bound to their labels once
(`queue_meter`, `publish_meter`), so a batch costs a few increments and no label lookups.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.metrics_core import Metric

from messaging.observability.batch_meters import Off, PublishMeter, QueueMeter

# Seconds; from a fast local confirm to a backlog drained after an outage.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 300.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "<unmatched>"  # the route label of a request no route matched (404, 405)
OwnMetrics = Callable[[CollectorRegistry | None], Any]  # makes a service's own families on a registry


class _Pid:
    """This process's id, read once and again after a fork, not by a getpid call per increment
    (what prometheus_client's multiprocess values ask for each time, to notice a fork)."""

    value = os.getpid()

    @classmethod
    def get(cls) -> int:
        return cls.value

    @classmethod
    def refresh(cls) -> None:
        cls.value = os.getpid()


os.register_at_fork(after_in_child=_Pid.refresh)


class Collector(Protocol):
    """Reports gauges at scrape time (see messaging.observability.exposition)."""

    def collect(self) -> Iterator[Metric]: ...


class Metrics:
    """Every metric of one process; `registry` None in multiprocess mode (read from files)."""

    def __init__(self, registry: CollectorRegistry | None, outbox: bool = False,
                 own: OwnMetrics | None = None) -> None:
        r = registry
        self.registry = registry
        if outbox:
            self._outbox_metrics(r)
        self.own = own(r) if own is not None else None  # the service's own families
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
        self.collectors: list[Collector] = []  # scrape-time gauges (messaging.observability.exposition.watch)
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


def configure(enabled: bool, outbox: bool = False, own: OwnMetrics | None = None,
              multiprocess: bool = False, registry: CollectorRegistry | None = None) -> Metrics | None:
    """Make this process's metrics (or none, when disabled): the publishing ones with `outbox`,
    the service's `own`; returns them."""
    global _active
    if not enabled:
        _active = None
        return None
    disable_created_metrics()  # no *_created series: they double the output and nobody reads them
    # prometheus_client picks its value class when imported, from PROMETHEUS_MULTIPROC_DIR: pick
    # again now, so that only a multiprocess service counts in files.
    values.ValueClass = (values.MultiProcessValue(process_identifier=_Pid.get) if multiprocess
                         else values.MutexValue)
    _active = Metrics(None if multiprocess else (registry or CollectorRegistry()), outbox, own)
    return _active


def active() -> Metrics | None:
    """This process's metrics, or None when they are off."""
    return _active


def own() -> Any:
    """The service's own families (what its `own` made), or None when metrics are off."""
    return _active.own if _active else None


def queue_meter(queue: str) -> QueueMeter | Off:
    """The consume loop's meter for `queue` (a no-op when metrics are off)."""
    return QueueMeter(_active, queue) if _active else Off()


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
