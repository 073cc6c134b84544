"""Start InventoryService: `python -m inventory_service` (wiring only)."""
from __future__ import annotations

import logging
import sys

from inventory_service import config
from inventory_service.store import InventoryStore
from inventory_service.unit_of_work import InventoryUnitOfWork
from messaging import service, topology
from messaging.amqp.relay import Relay
from messaging.observability import exposition

SERVICE = "inventory-service"
logger = logging.getLogger(SERVICE)


def build(settings: config.Settings) -> service.ConsumerService:
    """Stock the store, and consume order-events into it, publishing results through the relay."""
    store = InventoryStore.open(settings.storage)
    store.seed(settings.menu, settings.initial_stock)
    relay = Relay(settings.broker, store, SERVICE)
    consumer = InventoryUnitOfWork(store, settings.success_rate, relay)
    svc = service.ConsumerService(SERVICE, settings, settings.port, store, topology.ORDER_EVENTS,
                                  consumer.handle_batch, relay)
    svc.routes["/health"] = lambda: _health(svc, consumer)
    svc.routes["/stock"] = lambda: (200, {"stock": store.stock_levels()})
    exposition.watch(exposition.StockCollector(store))
    logger.info("success rate %.2f, menu %s", settings.success_rate, ", ".join(settings.menu))
    return svc


def _health(svc: service.ConsumerService, consumer: InventoryUnitOfWork) -> tuple[int, dict]:
    healthy = svc.loop.consuming and svc.relay.connected
    return (200 if healthy else 503), {
        "status": "healthy" if healthy else "unhealthy",
        "service": SERVICE,
        "consuming": svc.loop.consuming,
        "publisher_connected": svc.relay.connected,
        "outbox_backlog": svc.store.outbox_backlog(),
        "processed": svc.loop.processed,
        "duplicates": consumer.duplicates,
        "pruned": dict(svc.pruner.pruned),
    }


if __name__ == "__main__":
    sys.exit(service.main(SERVICE, config.load, build))
