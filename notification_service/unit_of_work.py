"""NotificationService's unit of work: settle one batch of inventory results in one transaction
(record each reserved order's notification once, skip the duplicates), then send and log. It never
touches pika and never acks: the shared consume loop acks the batch once this returns."""
from __future__ import annotations

import logging

from messaging import events, topology
from messaging.amqp.delivery import Delivery, Rejection, parse_all, traces
from messaging.db.backend import Connection
from messaging.observability import metrics
from messaging.observability.trace_context import about
from notification_service import handlers, own_metrics
from notification_service.store import NotificationStore

logger = logging.getLogger(__name__)


class NotificationUnitOfWork:
    """Settle a batch of inventory results in one transaction; notify each reserved order once.

    `duplicates` counts the reservations skipped because their order was already notified, in
    committed batches.
    """

    def __init__(self, store: NotificationStore) -> None:
        self._store = store
        self.duplicates = 0

    def handle_batch(self, deliveries: list[Delivery]) -> list[Rejection]:
        """Record and send notifications; return the poison deliveries for dead-lettering."""
        results, rejections = parse_all(deliveries, events.parse_inventory_result)
        contexts = traces(deliveries)
        sent: list[tuple] = []
        skipped = 0

        def settle(conn: Connection) -> None:
            nonlocal skipped
            sent.clear()
            skipped = 0
            for result in results:
                message = handlers.notification_for(result)
                if message is None:
                    with about(contexts.get(result.event_id), result.order_id, result.event_id):
                        logger.info("Not a reservation, no notification: order_id=%s event_id=%s "
                                    "type=%s", result.order_id, result.event_id, result.event_type)
                elif self._store.record(conn, result, message):
                    sent.append((result, message))
                else:
                    skipped += 1
                    with about(contexts.get(result.event_id), result.order_id, result.event_id):
                        logger.info("Duplicate InventoryReserved detected, skipping: order_id=%s "
                                    "event_id=%s", result.order_id, result.event_id)

        self._store.write(settle)
        for result, message in sent:
            with about(contexts.get(result.event_id), result.order_id, result.event_id):
                logger.info("Notification sent: order_id=%s event_id=%s user=%s item=%s: %s",
                            result.order_id, result.event_id, result.user_id, result.item, message)
        self.duplicates += skipped  # after the batch's log lines: a reader of both sees them
        own_metrics.notifications_sent(len(sent))
        metrics.duplicates(topology.INVENTORY_EVENTS.name, skipped)
        return rejections
