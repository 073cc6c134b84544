"""Start InventoryService: `python -m inventory_service` (wiring only)."""
from __future__ import annotations

import logging
import sys

from inventory_service import config, own_metrics
from inventory_service.store import InventoryStore
from inventory_service.unit_of_work import InventoryUnitOfWork
from messaging import service, topology
from messaging.amqp.relay import Relay

SERVICE = "inventory-service"
logger = logging.getLogger(SERVICE)


def build(settings: config.Settings) -> service.ConsumerService:
    """Stock the store, and consume order-events into it, publishing results through the relay."""
    service.observe(SERVICE, own_metrics.configure, settings.metrics)
    store = InventoryStore.open(settings.storage)
    store.seed(settings.menu, settings.initial_stock)
    relay = Relay(settings.broker, store, SERVICE)
    unit_of_work = InventoryUnitOfWork(store, settings.success_rate, relay)
    svc = service.ConsumerService(SERVICE, settings, settings.port, store, topology.ORDER_EVENTS,
                                  unit_of_work.handle_batch, lambda: own_health(unit_of_work), relay)
    svc.routes["/stock"] = lambda: (200, {"stock": store.stock_levels()})
    own_metrics.watch_stock(store)
    logger.info("success rate %.2f, menu %s", settings.success_rate, ", ".join(settings.menu))
    return svc


def own_health(unit_of_work: InventoryUnitOfWork) -> dict[str, int]:
    """InventoryService's own /health fields."""
    return {"duplicates": unit_of_work.duplicates}


if __name__ == "__main__":
    sys.exit(service.main(SERVICE, config.load, build))
