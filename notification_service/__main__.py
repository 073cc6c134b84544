"""Start NotificationService: `python -m notification_service`."""
from __future__ import annotations

import logging
import signal
import sys

from messaging import health, logs, topology
from messaging.consumer import ConsumeLoop
from messaging.runtime import freeze_startup_objects
from messaging.settings import ConfigError
from messaging.storage import is_transient
from notification_service import config
from notification_service.consumer import NotificationConsumer
from notification_service.store import NotificationStore

SERVICE = "notification-service"
logger = logging.getLogger(SERVICE)


def main() -> int:
    try:
        settings = config.load()
        logs.configure()
    except ConfigError as exc:
        print(f"notification-service: configuration error: {exc}", file=sys.stderr)
        return 2
    store = NotificationStore(settings.storage.path("notifications.db"), settings.storage)
    store.start_checkpoints()
    consumer = NotificationConsumer(store)
    loop = ConsumeLoop(settings.broker, topology.INVENTORY_EVENTS, consumer.handle_batch, SERVICE,
                       settings.consumer, is_transient, store.count_redelivery)
    server = health.serve(settings.port, {"/health": lambda: _health(loop, store, consumer)})
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    freeze_startup_objects()
    logger.info("NotificationService started: health on port %d", settings.port)
    loop.run()
    server.shutdown()
    store.stop_checkpoints()
    logger.info("NotificationService stopped")
    return 0


def _health(loop: ConsumeLoop, store: NotificationStore,
            consumer: NotificationConsumer) -> tuple[int, dict]:
    return (200 if loop.consuming else 503), {
        "status": "healthy" if loop.consuming else "unhealthy",
        "service": SERVICE,
        "consuming": loop.consuming,
        "notifications_sent": store.count(),
        "duplicates": consumer.duplicates,
    }


if __name__ == "__main__":
    sys.exit(main())
