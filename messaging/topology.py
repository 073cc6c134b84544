"""Every exchange, queue, binding and queue argument of the system, declared idempotently."""
from __future__ import annotations

from dataclasses import dataclass

from pika.adapters.blocking_connection import BlockingChannel

ORDERS_EXCHANGE = "orders"
INVENTORY_EXCHANGE = "inventory"
DEAD_LETTER_EXCHANGE = "dlx"
EXCHANGES = (ORDERS_EXCHANGE, INVENTORY_EXCHANGE, DEAD_LETTER_EXCHANGE)

ORDER_PLACED_KEY = "order.placed"
INVENTORY_RESERVED_KEY = "inventory.reserved"
INVENTORY_FAILED_KEY = "inventory.failed"


@dataclass(frozen=True)
class Queue:
    """A durable queue, its bindings and where its dead letters go."""

    name: str
    bindings: tuple[tuple[str, str], ...]
    dead_letter_key: str | None = None

    def arguments(self) -> dict[str, str]:
        """Queue arguments: dead-lettering through `dlx` when the queue has a DLQ."""
        if self.dead_letter_key is None:
            return {}
        return {
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.dead_letter_key,
        }


def _dead_letter_queue(name: str) -> Queue:
    return Queue(name, ((DEAD_LETTER_EXCHANGE, name),))


ORDER_EVENTS = Queue("order-events", ((ORDERS_EXCHANGE, ORDER_PLACED_KEY),), "order-events-dlq")
INVENTORY_EVENTS = Queue(
    "inventory-events", ((INVENTORY_EXCHANGE, INVENTORY_RESERVED_KEY),), "inventory-events-dlq"
)
ORDER_STATUS = Queue(
    "order-status",
    ((INVENTORY_EXCHANGE, INVENTORY_RESERVED_KEY), (INVENTORY_EXCHANGE, INVENTORY_FAILED_KEY)),
    "order-status-dlq",
)
ORDER_EVENTS_DLQ = _dead_letter_queue("order-events-dlq")
INVENTORY_EVENTS_DLQ = _dead_letter_queue("inventory-events-dlq")
ORDER_STATUS_DLQ = _dead_letter_queue("order-status-dlq")

WORK_QUEUES = (ORDER_EVENTS, INVENTORY_EVENTS, ORDER_STATUS)
DEAD_LETTER_QUEUES = (ORDER_EVENTS_DLQ, INVENTORY_EVENTS_DLQ, ORDER_STATUS_DLQ)
QUEUES = WORK_QUEUES + DEAD_LETTER_QUEUES


def declare(channel: BlockingChannel) -> None:
    """Declare the whole topology; safe to call on every (re)connect, in any start order."""
    for exchange in EXCHANGES:
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    for queue in QUEUES:
        channel.queue_declare(queue=queue.name, durable=True, arguments=queue.arguments())
        for exchange, key in queue.bindings:
            channel.queue_bind(queue=queue.name, exchange=exchange, routing_key=key)


def dead_letter_queue_for(queue: Queue) -> Queue:
    """Return the DLQ that `queue` dead-letters into."""
    return next(q for q in DEAD_LETTER_QUEUES if q.name == queue.dead_letter_key)
