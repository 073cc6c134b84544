"""Start NotificationService: `python -m notification_service` (wiring only)."""
from __future__ import annotations

import sys

from messaging import service, topology
from notification_service import config
from notification_service.store import NotificationStore
from notification_service.unit_of_work import NotificationUnitOfWork

SERVICE = "notification-service"


def build(settings: config.Settings) -> service.ConsumerService:
    """Consume inventory-events and notify each reserved order once."""
    store = NotificationStore.open(settings.storage)
    consumer = NotificationUnitOfWork(store)
    svc = service.ConsumerService(SERVICE, settings, settings.port, store,
                                  topology.INVENTORY_EVENTS, consumer.handle_batch)
    svc.routes["/health"] = lambda: _health(svc, store, consumer)
    return svc


def _health(svc: service.ConsumerService, store: NotificationStore,
            consumer: NotificationUnitOfWork) -> tuple[int, dict]:
    consuming = svc.loop.consuming
    return (200 if consuming else 503), {
        "status": "healthy" if consuming else "unhealthy",
        "service": SERVICE,
        "consuming": consuming,
        "notifications_sent": store.count(),
        "duplicates": consumer.duplicates,
        "pruned": dict(svc.pruner.pruned),
    }


if __name__ == "__main__":
    sys.exit(service.main(SERVICE, config.load, build))
