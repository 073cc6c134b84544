"""OrderService's unit of work: settle one batch of InventoryReserved/InventoryFailed results in one
transaction, moving each order to its final status. It never touches pika and never acks: the
shared consume loop (on each worker's status thread) acks the batch once this returns."""
from __future__ import annotations

import logging

from messaging import events, topology
from messaging.amqp.delivery import Delivery, Rejection, parse_all, traces
from messaging.observability import metrics
from messaging.observability.trace_context import about
from order_service import handlers, own_metrics
from order_service.store import OrderStore

logger = logging.getLogger(__name__)


class StatusUnitOfWork:
    """Settle a batch of inventory results in one transaction."""

    def __init__(self, store: OrderStore) -> None:
        self._store = store

    def handle_batch(self, deliveries: list[Delivery]) -> list[Rejection]:
        """Apply each result to its order; return poison deliveries for dead-lettering."""
        parsed, rejections = parse_all(deliveries, events.parse_inventory_result)
        results = [(result, *handlers.final_status(result)) for result in parsed]
        if not results:
            return rejections
        changes = [(result.order_id, status, reason) for result, status, reason in results]
        created: dict[str, str] = {}
        outcomes = self._store.write(
            lambda conn: self._store.finish_many(conn, changes, events.utc_now(), created))
        metrics.duplicates(topology.ORDER_STATUS.name, outcomes.count("duplicate"))
        moved = {order_id: status for order_id, status, _ in changes if order_id in created}
        own_metrics.orders_completed([(moved[order_id], at) for order_id, at in created.items()])
        contexts = traces(deliveries)
        for outcome, (result, status, _) in zip(outcomes, results, strict=True):
            with about(contexts.get(result.event_id), result.order_id, result.event_id):
                _log(outcome, status, result)
        return rejections


def _log(outcome: str, status: str, result: events.InventoryResult) -> None:
    if outcome == "updated":
        logger.info("Order %s: order_id=%s event_id=%s", status, result.order_id, result.event_id)
    elif outcome == "duplicate":
        logger.info("Order already final, skipping: order_id=%s event_id=%s",
                    result.order_id, result.event_id)
    else:
        logger.warning("Result for an unknown order, acknowledged: order_id=%s event_id=%s",
                       result.order_id, result.event_id)
