"""The start-up every service shares: settings or a one-line error, logging, metrics and spans; the
lifecycle of what runs beside a service's own work (WAL checkpoints, pruning, outbox relay, consume
loop), started in that order and stopped in reverse; the one line and exit status 3 when the broker
refuses our queues; and the consumer services' run on the main thread with their /health."""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from messaging import topology
from messaging.amqp.consume_loop import ConsumeLoop
from messaging.amqp.delivery import BatchHandler
from messaging.amqp.relay import Relay
from messaging.db.messaging_store import MessagingStore
from messaging.db.retention import Pruner
from messaging.observability import exposition, health, logs, spans
from messaging.settings import ConfigError, ServiceSettings
from messaging.topology import QueueMismatch

logger = logging.getLogger(__name__)
S = TypeVar("S", bound=ServiceSettings)

RELAY_FLUSH_SECONDS = 5.0  # how long a stopping consumer service waits for its outbox's last confirms
CONFIGURATION_ERROR = 2  # exit status when a setting is bad
TOPOLOGY_REFUSED = 3  # exit status when RabbitMQ refuses our queues (gunicorn's boot-error code)
HealthFields = Callable[[], dict[str, Any]]


class Service(Protocol):
    """What `main` runs once the settings are read: it returns the exit status."""

    def run(self) -> int: ...


def report_refusal(service: str, exc: QueueMismatch) -> None:
    """Print the one line saying why the broker refused the topology."""
    print(f"{service}: {exc}", file=sys.stderr, flush=True)


def report_configuration_error(service: str, exc: ConfigError) -> int:
    """Print the one line saying which setting is bad; return the exit status for it."""
    print(f"{service}: configuration error: {exc}", file=sys.stderr)
    return CONFIGURATION_ERROR


def load_settings(service: str, load: Callable[[], S]) -> S | None:
    """Read the settings and configure logging; on a bad value print one line and return None."""
    try:
        settings = load()
        logs.configure(service)
        spans.exporters(os.environ)  # a bad OTEL_TRACES_EXPORTER is told now, in one line
    except ConfigError as exc:
        report_configuration_error(service, exc)
        return None
    return settings


def observe(service: str, configure_metrics: Callable[..., object], enabled: bool,
            multiprocess: bool = False) -> None:
    """Make this process's metrics (the service's own set) and its span exporter: before the relay
    and consume loop are built, as they bind their meters."""
    configure_metrics(enabled, multiprocess=multiprocess)
    spans.configure(service)


def freeze_startup_objects() -> None:
    """Exempt everything allocated so far from cyclic garbage collection.

    Modules, the app, connections and caches made at start-up live as long as the process. Left
    to the collector, every full (generation 2) collection walks all of them again: tens of
    milliseconds during which no thread runs, which shows as the slowest requests. Frozen, a full
    collection only looks at what was allocated since, and takes about a millisecond.
    """
    gc.collect()
    gc.freeze()


def main(service: str, load: Callable[[], S], build: Callable[[S], Service]) -> int:
    """Load the settings, build the service and run it; exit 2 with one line when a setting is bad,
    3 with one line when the broker refuses our queues."""
    settings = load_settings(service, load)
    if settings is None:
        return CONFIGURATION_ERROR
    try:
        return build(settings).run()
    except ConfigError as exc:  # e.g. DATABASE_URL names no usable database
        return report_configuration_error(service, exc)
    except QueueMismatch as exc:
        report_refusal(service, exc)
        return TOPOLOGY_REFUSED


class Lifecycle:
    """What runs beside one process's own work: its store's WAL checkpoints, the pruning of its
    deduplication records, its outbox relay (if any) and a consume loop, started in that order
    and stopped in reverse.

    The consume loop runs on the caller's thread (`consume`), or with `in_thread` on a thread of
    its own: a gunicorn worker, whose threads serve requests. A refusal of our queues stops the
    loop, and `consume` raises it once everything has stopped; in a worker it ends the process
    at once with TOPOLOGY_REFUSED, so that gunicorn's master halts instead of forking worker after
    worker into the same refusal.
    """

    def __init__(self, service: str, settings: ServiceSettings, store: MessagingStore,
                 queue: topology.Queue, handle_batch: BatchHandler, relay: Relay | None = None,
                 loop_name: str | None = None, in_thread: bool = False) -> None:
        self.service, self.store, self.relay = service, store, relay
        self.loop = ConsumeLoop(settings.broker, queue, handle_batch, loop_name or service,
                                settings.consumer, store.is_transient, store.count_redelivery)
        self.pruner = Pruner(store, settings.retention)
        self.refused: QueueMismatch | None = None
        self._thread = (threading.Thread(target=self._consume_in_thread, name=loop_name, daemon=True)
                        if in_thread else None)
        if relay is not None:
            relay.on_refused = self.refuse
            exposition.watch(exposition.OutboxCollector(store))

    def start(self) -> None:
        """Start checkpointing, pruning, publishing and (`in_thread`) consuming; then freeze what
        start-up made, out of the garbage collector's way."""
        self.store.start_checkpoints()
        self.pruner.start()
        if self.relay is not None:
            self.relay.start()
        if self._thread is not None:
            self._thread.start()
        freeze_startup_objects()

    def consume(self) -> None:
        """Consume until `stop` or a refusal; raise the refusal once everything has stopped."""
        try:
            self.loop.run()  # returns once stop() was called and the batch in hand is settled
        except QueueMismatch as exc:
            self.refused = exc
        if self.refused is not None:
            raise self.refused

    def _consume_in_thread(self) -> None:
        try:
            self.loop.run()
        except QueueMismatch as exc:
            self.refuse(exc)

    def refuse(self, exc: QueueMismatch) -> None:
        """The broker refused our queues: stop consuming (in a worker, end the process)."""
        self.refused = exc
        if self._thread is not None:
            report_refusal(self.service, exc)
            os._exit(TOPOLOGY_REFUSED)
        self.loop.stop()

    def stop(self, timeout: float) -> None:
        """Finish the batch in hand, flush what the outbox can within `timeout`, stop pruning and
        checkpointing, export the last spans."""
        self.loop.stop()
        if self.relay is not None:
            self.relay.stop(timeout=timeout)
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=max(1.0, timeout / 2))
        self.pruner.stop()
        self.store.stop_checkpoints()
        spans.shutdown()

    def health(self, own: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A consumer's /health: healthy while consuming and, with a relay, able to publish."""
        fields: dict[str, Any] = {"consuming": self.loop.consuming}
        healthy = self.loop.consuming
        if self.relay is not None:
            fields["publisher_connected"] = self.relay.connected
            fields["outbox_backlog"] = self.store.outbox_backlog()
            healthy = healthy and self.relay.connected
        fields |= {"processed": self.loop.processed, **own, "pruned": dict(self.pruner.pruned)}
        return health.report(self.service, healthy, fields)


class ConsumerService:
    """A consumer service: its lifecycle, consuming on the main thread until SIGTERM or SIGINT,
    and its HTTP routes (/health with the service's own fields, /metrics, any other)."""

    def __init__(self, name: str, settings: ServiceSettings, port: int, store: MessagingStore,
                 queue: topology.Queue, handle_batch: BatchHandler, own_health: HealthFields,
                 relay: Relay | None = None) -> None:
        self.name, self.port = name, port
        self.lifecycle = Lifecycle(name, settings, store, queue, handle_batch, relay)
        self.routes: dict[str, health.Route] = {
            "/health": lambda: self.lifecycle.health(own_health()), "/metrics": exposition.route}

    def run(self) -> int:
        """Serve the routes, consume until a signal, then stop in order; return 0 (a refusal of
        our queues is raised once everything has stopped)."""
        server = health.serve(self.port, self.routes)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.lifecycle.loop.stop())
        self.lifecycle.start()
        logger.info("%s started: health on port %d", self.name, self.port)
        try:
            self.lifecycle.consume()
        finally:
            self.lifecycle.stop(timeout=RELAY_FLUSH_SECONDS)
            server.shutdown()
        logger.info("%s stopped", self.name)
        return 0
