"""Start OrderService under gunicorn: `python -m order_service` (wiring only)."""
from __future__ import annotations

import logging
import sys

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from messaging.amqp.connection import check_topology
from messaging.observability import exposition, logs, metrics, spans
from messaging.runtime import freeze_startup_objects
from messaging.service import TOPOLOGY_REFUSED, load_settings, report_refusal
from messaging.settings import ConfigError
from messaging.topology import QueueMismatch
from order_service import config
from order_service.app import create_app
from order_service.background import Background
from order_service.store import OrderStore

logger = logging.getLogger("order-service")


class GunicornLogger(glogging.Logger):
    """gunicorn's own log lines, in LOG_FORMAT like the service's."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            logs.use_json(handler)


class OrderServiceApplication(BaseApplication):
    """gunicorn with our settings; the app and its connections are made in each worker."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": f"{s.host}:{s.port}", "workers": s.workers, "threads": s.threads,
            "worker_class": "gthread", "graceful_timeout": s.graceful_timeout, "timeout": 30,
            "keepalive": 5, "preload_app": False, "accesslog": None, "loglevel": "info",
            "post_worker_init": _start_background, "worker_exit": _stop_background,
            "child_exit": lambda _server, worker: exposition.worker_exited(worker.pid),
            "control_socket_disable": True, "logger_class": GunicornLogger,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        metrics.configure(self.settings.metrics, "order-service", multiprocess=True)
        spans.configure("order-service")  # in the worker: the span exporter has a thread
        store = OrderStore.open(self.settings.storage)
        exposition.watch(exposition.OutboxCollector(store))
        background = Background(self.settings, store)
        app = create_app(self.settings, store, background.relay)
        app.extensions["background"] = background
        return app


def _start_background(worker) -> None:
    worker.wsgi.extensions["background"].start()
    freeze_startup_objects()


def _stop_background(_server, worker) -> None:
    background = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get("background")
    if background:
        background.stop(timeout=max(1.0, worker.cfg.graceful_timeout / 2))
    spans.shutdown()


def main() -> int:
    settings = load_settings("order-service", config.load)
    if settings is None:
        return 2
    try:  # before the fork: a refused topology stops the master, not just a worker
        if not check_topology(settings.broker):
            logger.warning("RabbitMQ unreachable at start-up; orders are accepted and published "
                           "once it is back")
    except QueueMismatch as exc:
        report_refusal("order-service", exc)
        return TOPOLOGY_REFUSED
    try:
        store = OrderStore.open(settings.storage)  # creates or migrates the schema once
    except ConfigError as exc:  # DATABASE_URL names no usable database
        print(f"order-service: configuration error: {exc}", file=sys.stderr)
        return 2
    store.release_claims()  # no relay runs yet: claims left by a crash are stale
    store.close()
    logger.info("OrderService starting on %s:%d with %d worker(s)", settings.host, settings.port,
                settings.workers)
    private_dir = exposition.prepare_multiprocess() if settings.metrics else None
    try:
        OrderServiceApplication(settings).run()
    finally:
        exposition.remove(private_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
