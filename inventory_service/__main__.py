"""Start InventoryService: `python -m inventory_service`."""
from __future__ import annotations

import logging
import signal
import sys

from inventory_service import config
from inventory_service.consumer import InventoryConsumer
from inventory_service.store import InventoryStore
from messaging import health, logs, topology
from messaging.consumer import ConsumeLoop
from messaging.relay import Relay
from messaging.runtime import freeze_startup_objects
from messaging.settings import ConfigError
from messaging.storage import is_transient

SERVICE = "inventory-service"
logger = logging.getLogger(SERVICE)


def main() -> int:
    try:
        settings = config.load()
        logs.configure()
    except ConfigError as exc:
        print(f"inventory-service: configuration error: {exc}", file=sys.stderr)
        return 2
    store = InventoryStore(settings.storage.path("inventory.db"), settings.storage)
    store.seed(settings.menu, settings.initial_stock)
    store.start_checkpoints()
    relay = Relay(settings.broker, store, SERVICE)
    consumer = InventoryConsumer(store, settings.success_rate, relay)
    loop = ConsumeLoop(settings.broker, topology.ORDER_EVENTS, consumer.handle_batch, SERVICE,
                       settings.consumer, is_transient, store.count_redelivery)
    server = health.serve(settings.port, {
        "/health": lambda: _health(loop, relay, store, consumer),
        "/stock": lambda: (200, {"stock": store.stock_levels()}),
    })
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    relay.start()
    freeze_startup_objects()
    logger.info("InventoryService started: health on port %d, success rate %.2f",
                settings.port, settings.success_rate)
    loop.run()
    relay.stop(timeout=5.0)
    server.shutdown()
    store.stop_checkpoints()
    logger.info("InventoryService stopped")
    return 0


def _health(loop: ConsumeLoop, relay: Relay, store: InventoryStore,
            consumer: InventoryConsumer) -> tuple[int, dict]:
    healthy = loop.consuming and relay.connected
    return (200 if healthy else 503), {
        "status": "healthy" if healthy else "unhealthy",
        "service": SERVICE,
        "consuming": loop.consuming,
        "publisher_connected": relay.connected,
        "outbox_backlog": store.outbox_backlog(),
        "processed": loop.processed,
        "duplicates": consumer.duplicates,
    }


if __name__ == "__main__":
    sys.exit(main())
