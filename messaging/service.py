"""The start-up every service shares: settings or a one-line error, logging, and for the consumer
services the run itself (health server, signals, relay, consume loop, orderly stop)."""
from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from messaging import topology
from messaging.amqp.consume_loop import ConsumeLoop
from messaging.amqp.delivery import BatchHandler
from messaging.amqp.relay import Relay
from messaging.db.messaging_store import MessagingStore
from messaging.db.retention import Pruner
from messaging.observability import exposition, health, logs, metrics, spans
from messaging.runtime import freeze_startup_objects
from messaging.settings import ConfigError, ServiceSettings
from messaging.topology import QueueMismatch

logger = logging.getLogger(__name__)
S = TypeVar("S", bound=ServiceSettings)

RELAY_FLUSH_SECONDS = 5.0  # how long a stopping service waits for its outbox's last confirms
TOPOLOGY_REFUSED = 3  # exit status when RabbitMQ refuses our queues (gunicorn's boot-error code)


def report_refusal(service: str, exc: QueueMismatch) -> None:
    """Print the one line saying why the broker refused the topology."""
    print(f"{service}: {exc}", file=sys.stderr, flush=True)


def load_settings(service: str, load: Callable[[], S]) -> S | None:
    """Read the settings and configure logging; on a bad value print one line and return None."""
    try:
        settings = load()
        logs.configure(service)
        spans.exporters(os.environ)  # a bad OTEL_TRACES_EXPORTER is told now, in one line
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        return None
    return settings


class ConsumerService:
    """A consumer service: its store, consume loop, optional outbox relay, the pruning of its
    deduplication records and health routes."""

    def __init__(self, name: str, settings: ServiceSettings, port: int, store: MessagingStore,
                 queue: topology.Queue, handle_batch: BatchHandler, relay: Relay | None = None,
                 ) -> None:
        self.name, self.port, self.store, self.relay = name, port, store, relay
        self.loop = ConsumeLoop(settings.broker, queue, handle_batch, name, settings.consumer,
                                store.is_transient, store.count_redelivery)
        self.pruner = Pruner(store, settings.retention)
        self.routes: dict[str, health.Route] = {"/metrics": exposition.route}
        if relay is not None:
            exposition.watch(exposition.OutboxCollector(store))
        self.refused: QueueMismatch | None = None
        if relay is not None:
            relay.on_refused = self._refuse

    def _refuse(self, exc: QueueMismatch) -> None:
        self.refused = exc
        self.loop.stop()

    def run(self) -> int:
        """Serve the routes, consume until SIGTERM or SIGINT, then stop in order; return 0, or
        TOPOLOGY_REFUSED with one line on stderr when the broker refuses our queues."""
        self.store.start_checkpoints()
        self.pruner.start()
        server = health.serve(self.port, self.routes)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.loop.stop())
        if self.relay is not None:
            self.relay.start()
        freeze_startup_objects()
        logger.info("%s started: health on port %d", self.name, self.port)
        try:
            self.loop.run()  # returns once stop() was called and the batch in hand is settled
        except QueueMismatch as exc:
            self.refused = exc
        if self.relay is not None:
            self.relay.stop(timeout=RELAY_FLUSH_SECONDS)
        server.shutdown()
        spans.shutdown()  # export the last spans
        self.pruner.stop()
        self.store.stop_checkpoints()
        if self.refused is not None:
            report_refusal(self.name, self.refused)
            return TOPOLOGY_REFUSED
        logger.info("%s stopped", self.name)
        return 0


def main(service: str, load: Callable[[], S], build: Callable[[S], ConsumerService]) -> int:
    """Load the settings (exit 2 with one line when they are bad), build the service, run it."""
    settings = load_settings(service, load)
    if settings is None:
        return 2
    metrics.configure(settings.metrics, service)  # before build: the loop and relay bind theirs
    spans.configure(service)
    try:
        svc = build(settings)
    except ConfigError as exc:  # e.g. DATABASE_URL names no usable database
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        return 2
    return svc.run()
