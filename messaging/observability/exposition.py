"""Serving the metrics: GET /metrics in the Prometheus text format, for one process or for every
gunicorn worker at once, with the gauges that are read from the store at scrape time.

Under gunicorn each worker counts into files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode) and a scrape, whichever worker answers it, sums them. Gauges that describe the
database (the outbox backlog and age here; a service may watch its own) are read from it when
scraped, so every worker reports the same value and nothing has to be kept up to date in between.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

from messaging.observability import metrics
from messaging.observability.health import Text

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OFF = {"error": "metrics are off (METRICS=off)", "status": 404}


class StoreGauges:
    """Gauges read from a store when scraped; left out, with a warning, when it cannot answer."""

    what = "store"  # what the warning says could not be read

    def __init__(self, store: Any) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        try:
            answer = self.read()
        except Exception as exc:  # the database is unavailable: leave the gauges out, not fail
            logger.warning("metrics: cannot read the %s: %s", self.what, exc)
            return
        yield from self.families(answer)

    def read(self) -> Any:
        raise NotImplementedError

    def families(self, answer: Any) -> Iterator[Metric]:
        raise NotImplementedError


class OutboxCollector(StoreGauges):
    """outbox_pending_messages and outbox_oldest_message_age_seconds, read from the store."""

    what = "outbox"

    def read(self) -> tuple[int, float | None]:
        return self._store.outbox_pending()

    def families(self, answer: tuple[int, float | None]) -> Iterator[Metric]:
        count, oldest = answer
        yield GaugeMetricFamily("outbox_pending_messages", "Messages in the outbox, not yet "
                                "confirmed by the broker (or confirmed and about to be deleted)",
                                value=count)
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        yield GaugeMetricFamily("outbox_oldest_message_age_seconds",
                                "Age of the oldest message in the outbox; 0 when it is empty",
                                value=age)


def watch(collector: metrics.Collector) -> None:
    """Add a scrape-time collector (nothing when metrics are off)."""
    active = metrics.active()
    if active is None:
        return
    active.collectors.append(collector)
    if active.registry is not None:
        active.registry.register(collector)


def text() -> tuple[bytes, str] | None:
    """The Prometheus text of this process (of all workers, in multiprocess mode), or None when
    metrics are off."""
    active = metrics.active()
    if active is None:
        return None
    registry = active.registry
    if registry is None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for collector in active.collectors:
            registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def route() -> tuple[int, Any]:
    """The consumers' GET /metrics (see messaging.observability.health)."""
    answer = text()
    return (404, OFF) if answer is None else (200, Text(*answer))


def listener_port(environ: dict[str, Any]) -> int | None:
    """The port of the listening socket a request came in on: from the connection's own socket
    under gunicorn, else SERVER_PORT (which gunicorn, for a TCP listener, and werkzeug also take
    from the socket, never from the Host header a client writes)."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        try:
            address = sock.getsockname()
        except OSError:
            return None
        return address[1] if isinstance(address, tuple) else None  # a Unix socket has no port
    try:
        return int(environ["SERVER_PORT"])
    except (KeyError, ValueError):
        return None


def on_its_door(path: str, port: int | None, metrics_port: int | None) -> bool:
    """Whether a request for `path` that came in on `port` may be served: with a metrics port,
    /metrics only there and nothing else there; without one, everything everywhere."""
    if metrics_port is None:
        return True
    return (path == "/metrics") == (port == metrics_port)


def instrument_flask(app: Any, metrics_port: int | None = None) -> None:
    """Serve GET /metrics on a Flask app (on `metrics_port` only, when given: every other path
    answers 404 there, and /metrics answers 404 on the other ports) and count its requests by
    route pattern, those refused at the wrong door too."""
    from flask import Response, abort, g, jsonify, request

    @app.get("/metrics")
    def metrics_text() -> Any:
        answer = text()
        if answer is None:
            return jsonify(OFF), 404
        return Response(answer[0], headers={"Content-Type": answer[1]})

    if metrics.active() is not None:
        @app.before_request
        def start_clock() -> None:
            g.metrics_started = time.perf_counter()

        @app.after_request
        def count(response: Any) -> Any:
            started = g.pop("metrics_started", None)
            if started is not None:
                rule = request.url_rule
                metrics.http_request(request.method, rule.rule if rule else None,
                                     response.status_code, time.perf_counter() - started)
            return response

    if metrics_port is not None:
        @app.before_request
        def metrics_door() -> None:
            if not on_its_door(request.path, listener_port(request.environ), metrics_port):
                abort(404)


def prepare_multiprocess(service: str) -> str | None:
    """Before gunicorn forks: point the workers at a private directory for their counts, unless
    PROMETHEUS_MULTIPROC_DIR names one (made if missing); return the private one, for `remove`."""
    if os.environ.get(MULTIPROC_ENV):
        os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
        return None
    path = tempfile.mkdtemp(prefix=f"{service}-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def worker_exited(pid: int) -> None:
    """Forget the live gauges of a gunicorn worker that exited (its counts stay in the sums)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def remove(path: str | None) -> None:
    """Remove the private directory `prepare_multiprocess` made."""
    if path:
        shutil.rmtree(path, ignore_errors=True)
