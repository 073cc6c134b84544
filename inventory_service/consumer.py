"""The AMQP shell of InventoryService: decode, decide, commit (inbox + stock + outbox), then ack."""
from __future__ import annotations

import logging
import sqlite3

from inventory_service import handlers
from inventory_service.store import InventoryStore
from messaging import events, outbox
from messaging.consumer import Delivery, Rejection
from messaging.events import OrderPlaced, Poison
from messaging.outbox import PendingMessage
from messaging.relay import Relay

logger = logging.getLogger(__name__)


class InventoryConsumer:
    """Settle a batch of OrderPlaced deliveries in one transaction."""

    def __init__(self, store: InventoryStore, success_rate: float, relay: Relay) -> None:
        self._store, self._success_rate, self._relay = store, success_rate, relay

    def handle_batch(self, deliveries: list[Delivery]) -> list[Rejection]:
        """Reserve for each valid event; return the poison ones for dead-lettering."""
        rejections: list[Rejection] = []
        log_lines: list[tuple] = []
        results: list[PendingMessage] = []
        claimant = self._relay.claimant()

        def settle(conn: sqlite3.Connection) -> None:
            for delivery in deliveries:
                try:
                    event = events.parse_order_placed(delivery.body)
                except Poison as poison:
                    rejections.append(Rejection(delivery, poison.reason, str(poison)))
                    continue
                log_lines.append(self._reserve(conn, event, claimant, results))

        self._store.write(settle)
        for line in log_lines:
            logger.info(*line)
        if results:
            self._relay.hand_over(results if claimant else [])
        return rejections

    def _reserve(self, conn, event: OrderPlaced, claimant: str | None,
                 results: list[PendingMessage]) -> tuple:
        if not outbox.mark_processed(conn, event.event_id) or self._store.has_outcome(conn, event.order_id):
            return ("Duplicate OrderPlaced detected, skipping: order_id=%s event_id=%s",
                    event.order_id, event.event_id)
        stock = self._store.stock_of(conn, event.item)
        item, available = stock if stock else (event.item, None)
        decision = handlers.decide(event, available, self._success_rate)
        result = handlers.result_for(event, decision, events.utc_now())
        self._store.record(conn, event, item, result)
        pending = outbox.add(conn, handlers.result_message(result), claimant)
        if pending is not None:
            results.append(pending)
        if decision.reserved:
            return ("Inventory reserved: order_id=%s event_id=%s item=%s quantity=%d",
                    event.order_id, event.event_id, item, event.quantity)
        return ("Inventory failed: order_id=%s event_id=%s item=%s reason=%s",
                event.order_id, event.event_id, event.item, decision.reason)
