"""InventoryService's unit of work: settle one batch of OrderPlaced deliveries in one transaction
(inbox marks, stock taken, reservations and the results in the outbox), with the decisions made by
`handlers.reserve`. It never touches pika and never acks: the shared consume loop acks the batch
once this returns."""
from __future__ import annotations

import logging

from inventory_service import handlers
from inventory_service.store import InventoryStore, Outcome
from messaging import events, topology
from messaging.amqp.delivery import Delivery, Rejection, parse_all, traces
from messaging.amqp.relay import Relay
from messaging.db import inbox, outbox
from messaging.db.backend import Connection
from messaging.db.outbox import PendingMessage
from messaging.events import OrderPlaced
from messaging.observability import metrics
from messaging.observability.trace_context import about, header

logger = logging.getLogger(__name__)


class InventoryUnitOfWork:
    """Settle a batch of OrderPlaced deliveries in one transaction.

    `duplicates` counts the events recognised as already handled (skipped), in committed batches.
    """

    def __init__(self, store: InventoryStore, success_rate: float, relay: Relay) -> None:
        self._store, self._success_rate, self._relay = store, success_rate, relay
        self.duplicates = 0

    def handle_batch(self, deliveries: list[Delivery]) -> list[Rejection]:
        """Reserve for each valid event; return the poison ones for dead-lettering."""
        placed, rejections = parse_all(deliveries, events.parse_order_placed)
        contexts = traces(deliveries)  # each result continues the trace of the event it answers
        log_lines: list[handlers.LogLine] = []
        results: list[PendingMessage] = []
        claimant = self._relay.claimant()
        skipped = 0

        def settle(conn: Connection) -> None:
            nonlocal skipped
            outcomes, lines = self._reserve(conn, placed)
            log_lines[:] = lines
            skipped = len(placed) - len(outcomes)  # every event is either decided or a duplicate
            self._store.record(conn, outcomes)
            results[:] = outbox.add_many(conn, [
                handlers.result_message(o.result, header(contexts.get(o.event.event_id)))
                for o in outcomes], claimant)

        if placed:
            self._store.write(settle)
        for event, line in log_lines:
            with about(contexts.get(event.event_id), event.order_id, event.event_id):
                logger.info(*line)
        self.duplicates += skipped  # after the batch's log lines: a reader of both sees them
        metrics.duplicates(topology.ORDER_EVENTS.name, skipped)
        if results:
            self._relay.hand_over(results if claimant else [])
        return rejections

    def _reserve(self, conn: Connection, placed: list[OrderPlaced],
                 ) -> tuple[list[Outcome], list[handlers.LogLine]]:
        """Read what the decision needs (marking the new event ids processed), then decide."""
        self._store.lock_ledger(conn)
        fresh = inbox.mark_processed_many(conn, [event.event_id for event in placed])
        decided = self._store.outcomes_among(conn, {event.order_id for event in placed})
        stock = self._store.stock_for(conn, {event.item for event in placed})
        return handlers.reserve(placed, fresh, decided, stock, self._success_rate, events.utc_now())
