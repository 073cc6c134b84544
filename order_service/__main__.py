"""Start OrderService under gunicorn: `python -m order_service` (wiring only)."""
from __future__ import annotations

import logging
import os
import sys

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from messaging import service, topology
from messaging.amqp.connection import check_topology
from messaging.amqp.relay import Relay
from messaging.observability import exposition, logs
from order_service import config, own_metrics
from order_service.app import create_app
from order_service.store import OrderStore
from order_service.unit_of_work import StatusUnitOfWork

SERVICE = "order-service"
logger = logging.getLogger(SERVICE)


class GunicornLogger(glogging.Logger):
    """gunicorn's own log lines, in LOG_FORMAT like the service's."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            logs.use_json(handler)


class OrderServiceApplication(BaseApplication):
    """gunicorn with our settings; the app and its connections are made in each worker, each
    worker with its own lifecycle (relay, status consumer on a thread, pruner, checkpoints)."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": _binds(s), "workers": s.workers, "threads": s.threads,
            "worker_class": "gthread", "graceful_timeout": s.graceful_timeout, "timeout": 30,
            "keepalive": 5, "preload_app": False, "accesslog": None, "loglevel": "info",
            "limit_request_line": config.MAX_REQUEST_LINE,
            "post_worker_init": _start_lifecycle, "worker_exit": _stop_lifecycle,
            "child_exit": lambda _server, worker: exposition.worker_exited(worker.pid),
            "control_socket_disable": True, "logger_class": GunicornLogger,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        s = self.settings
        service.observe(SERVICE, own_metrics.configure, s.metrics, multiprocess=True)
        store = OrderStore.open(s.storage)
        name = f"{SERVICE}-{os.getpid()}"
        relay = Relay(s.broker, store, name)
        lifecycle = service.Lifecycle(SERVICE, s, store, topology.ORDER_STATUS,
                                      StatusUnitOfWork(store).handle_batch, relay,
                                      loop_name=f"{name}-status", in_thread=True)
        app = create_app(s, store, relay)
        app.extensions["lifecycle"] = lifecycle
        return app



class OrderService:
    """OrderService as service.main runs it: gunicorn's master, with the metrics directory its
    workers share."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings

    def run(self) -> int:
        """Serve until gunicorn's master stops (it exits 3 itself when a worker cannot boot)."""
        logger.info("OrderService starting on %s:%d with %d worker(s)%s", self.settings.host,
                    self.settings.port, self.settings.workers,
                    f", /metrics on port {self.settings.metrics_port} only"
                    if self.settings.metrics_port else "")
        private_dir = exposition.prepare_multiprocess(SERVICE) if self.settings.metrics else None
        try:
            OrderServiceApplication(self.settings).run()
        finally:
            exposition.remove(private_dir)
        return 0


def _binds(settings: config.Settings) -> list[str]:
    """The API's address, and the metrics port's when METRICS_PORT is set (the same workers
    serve both; the app tells them apart by the listening socket)."""
    ports = [settings.port] + ([settings.metrics_port] if settings.metrics_port else [])
    return [f"{settings.host}:{port}" for port in ports]


def _start_lifecycle(worker) -> None:
    worker.wsgi.extensions["lifecycle"].start()


def _stop_lifecycle(_server, worker) -> None:
    lifecycle = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get("lifecycle")
    if lifecycle:
        lifecycle.stop(timeout=max(1.0, worker.cfg.graceful_timeout / 2))


def build(settings: config.Settings) -> OrderService:
    """Check the broker's queues before the fork (a refusal stops the master, not just a worker),
    create or migrate the schema once, release the claims a crash left."""
    if not check_topology(settings.broker):
        logger.warning("RabbitMQ unreachable at start-up; orders are accepted and published "
                       "once it is back")
    store = OrderStore.open(settings.storage)  # creates or migrates the schema once
    store.release_claims()  # no relay runs yet: claims left by a crash are stale
    store.close()
    return OrderService(settings)


if __name__ == "__main__":
    sys.exit(service.main(SERVICE, config.load, build))
