"""Start NotificationService: `python -m notification_service` (wiring only)."""
from __future__ import annotations

import sys

from messaging import service, topology
from notification_service import config, own_metrics
from notification_service.store import NotificationStore
from notification_service.unit_of_work import NotificationUnitOfWork

SERVICE = "notification-service"


def build(settings: config.Settings) -> service.ConsumerService:
    """Consume inventory-events and notify each reserved order once."""
    service.observe(SERVICE, own_metrics.configure, settings.metrics)
    store = NotificationStore.open(settings.storage)
    unit_of_work = NotificationUnitOfWork(store)
    return service.ConsumerService(SERVICE, settings, settings.port, store,
                                   topology.INVENTORY_EVENTS, unit_of_work.handle_batch,
                                   lambda: own_health(store, unit_of_work))


def own_health(store: NotificationStore, unit_of_work: NotificationUnitOfWork) -> dict[str, int]:
    """NotificationService's own /health fields."""
    return {"notifications_sent": store.count(), "duplicates": unit_of_work.duplicates}


if __name__ == "__main__":
    sys.exit(service.main(SERVICE, config.load, build))
