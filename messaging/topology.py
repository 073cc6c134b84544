"""Every exchange, queue, binding and queue argument of the system, declared idempotently.

Queues are classic (the spec's topology) or, with RABBITMQ_QUEUE_TYPE=quorum, replicated quorum
queues whose redeliveries the broker itself bounds. RabbitMQ refuses to re-declare a queue as
another type (PRECONDITION_FAILED); that is reported as a QueueMismatch, which no reconnect mends.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

ORDERS_EXCHANGE = "orders"
INVENTORY_EXCHANGE = "inventory"
DEAD_LETTER_EXCHANGE = "dlx"
EXCHANGES = (ORDERS_EXCHANGE, INVENTORY_EXCHANGE, DEAD_LETTER_EXCHANGE)

CLASSIC, QUORUM = "classic", "quorum"
# Deliveries a quorum work queue allows a message beyond the first before the broker dead-letters
# it (its x-delivery-limit): REDELIVERY_LIMIT's default. One value for every service, because the
# broker refuses a re-declaration whose limit differs from the queue's.
QUORUM_DELIVERY_LIMIT = 10
# How a quorum work queue dead-letters what passes its delivery limit: at-least-once, so the
# message stays in the queue until `dlx` has routed it and the DLQ has confirmed it (at-most-once,
# the default, would drop it when the DLQ is unbound or full). RabbitMQ 3.10 honours the strategy
# only on a queue that rejects publishes when full (x-overflow reject-publish; with drop-head it
# falls back to at-most-once) and has a dead-letter exchange. Held dead letters are retried every
# `dead_letter_worker_publisher_confirm_timeout` (broker setting, 180 s by default).
QUORUM_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
PRECONDITION_FAILED = 406

ORDER_PLACED_KEY = "order.placed"
INVENTORY_RESERVED_KEY = "inventory.reserved"
INVENTORY_FAILED_KEY = "inventory.failed"


@dataclass(frozen=True)
class Queue:
    """A durable queue, its bindings and where its dead letters go."""

    name: str
    bindings: tuple[tuple[str, str], ...]
    dead_letter_key: str | None = None
    # The service whose broker user alone may publish what the queue takes (None: anyone, a DLQ).
    sender: str | None = None

    def arguments(self, queue_type: str = CLASSIC) -> dict[str, str | int]:
        """Queue arguments: dead-lettering through `dlx` when the queue has a DLQ; for a quorum
        queue its type, and for a quorum work queue the broker's delivery limit and at-least-once
        dead-lettering."""
        arguments: dict[str, str | int] = {}
        if queue_type == QUORUM:
            arguments["x-queue-type"] = QUORUM
        if self.dead_letter_key is None:
            return arguments
        if queue_type == QUORUM:  # never on a DLQ: with nowhere to dead-letter, it would drop
            arguments["x-delivery-limit"] = QUORUM_DELIVERY_LIMIT
            arguments.update(QUORUM_DEAD_LETTERING)
        arguments["x-dead-letter-exchange"] = DEAD_LETTER_EXCHANGE
        arguments["x-dead-letter-routing-key"] = self.dead_letter_key
        return arguments


def _dead_letter_queue(name: str) -> Queue:
    return Queue(name, ((DEAD_LETTER_EXCHANGE, name),))


# The services, as the senders and declarers below name them.
ORDER_SERVICE, INVENTORY_SERVICE, NOTIFICATION_SERVICE = "order", "inventory", "notification"

# An OrderPlaced is OrderService's to publish; a reservation's result InventoryService's.
ORDER_EVENTS = Queue("order-events", ((ORDERS_EXCHANGE, ORDER_PLACED_KEY),), "order-events-dlq",
                     ORDER_SERVICE)
INVENTORY_EVENTS = Queue(
    "inventory-events", ((INVENTORY_EXCHANGE, INVENTORY_RESERVED_KEY),), "inventory-events-dlq",
    INVENTORY_SERVICE,
)
ORDER_STATUS = Queue(
    "order-status",
    ((INVENTORY_EXCHANGE, INVENTORY_RESERVED_KEY), (INVENTORY_EXCHANGE, INVENTORY_FAILED_KEY)),
    "order-status-dlq",
    INVENTORY_SERVICE,
)
ORDER_EVENTS_DLQ = _dead_letter_queue("order-events-dlq")
INVENTORY_EVENTS_DLQ = _dead_letter_queue("inventory-events-dlq")
ORDER_STATUS_DLQ = _dead_letter_queue("order-status-dlq")

WORK_QUEUES = (ORDER_EVENTS, INVENTORY_EVENTS, ORDER_STATUS)
DEAD_LETTER_QUEUES = (ORDER_EVENTS_DLQ, INVENTORY_EVENTS_DLQ, ORDER_STATUS_DLQ)
QUEUES = WORK_QUEUES + DEAD_LETTER_QUEUES


@dataclass(frozen=True)
class Part:
    """What one service declares when it declares only its own part (RABBITMQ_TOPOLOGY=own): the
    exchanges it publishes to or binds from, and the queue it consumes with its DLQ. Together the
    three parts are the whole topology, so it stands whichever service starts first. `publishes`:
    the (exchange, routing key) of its events; its dead letters go to `dlx` besides."""

    exchanges: tuple[str, ...]
    queues: tuple[Queue, ...]
    publishes: tuple[tuple[str, str], ...] = ()


WHOLE = Part(EXCHANGES, QUEUES)
PARTS = {
    ORDER_SERVICE: Part((ORDERS_EXCHANGE, INVENTORY_EXCHANGE, DEAD_LETTER_EXCHANGE),
                        (ORDER_STATUS, ORDER_STATUS_DLQ), ((ORDERS_EXCHANGE, ORDER_PLACED_KEY),)),
    INVENTORY_SERVICE: Part((ORDERS_EXCHANGE, INVENTORY_EXCHANGE, DEAD_LETTER_EXCHANGE),
                            (ORDER_EVENTS, ORDER_EVENTS_DLQ),
                            ((INVENTORY_EXCHANGE, INVENTORY_RESERVED_KEY),
                             (INVENTORY_EXCHANGE, INVENTORY_FAILED_KEY))),
    NOTIFICATION_SERVICE: Part((INVENTORY_EXCHANGE, DEAD_LETTER_EXCHANGE),
                               (INVENTORY_EVENTS, INVENTORY_EVENTS_DLQ)),
}


@dataclass(frozen=True)
class Rights:
    """A broker user's permissions in the vhost: regular expressions RabbitMQ matches against the
    names of exchanges and queues, and per topic exchange the routing keys it may publish with
    (and bind with)."""

    configure: str
    write: str
    read: str
    topics: tuple[tuple[str, str], ...] = ()  # (exchange, routing-key regex)


OPERATOR_RIGHTS = Rights(".*", ".*", ".*")


def _exactly(names: list[str]) -> str:
    return "^(" + "|".join(sorted({n.replace(".", "\\.") for n in names})) + ")$"


def rights(service: str) -> Rights:
    """Exactly what `service` needs to declare its part, consume its queue and publish its events
    and dead letters. RabbitMQ asks configure to declare; write and, on the DLX, read to declare a
    queue that dead-letters; write on the queue and read on the exchange to bind; write to
    publish; read to consume."""
    part = PARTS[service]
    queues = [q.name for q in part.queues]
    consumed = [q.name for q in part.queues if q.dead_letter_key]
    keys: dict[str, list[str]] = {}
    for exchange, key in part.publishes + tuple((DEAD_LETTER_EXCHANGE, q.dead_letter_key)
                                                for q in part.queues if q.dead_letter_key):
        keys.setdefault(exchange, []).append(key)
    return Rights(configure=_exactly(list(part.exchanges) + queues),
                  write=_exactly(list(keys) + queues),
                  read=_exactly([e for q in part.queues for e, _ in q.bindings] + consumed),
                  topics=tuple((e, _exactly(k)) for e, k in sorted(keys.items())))


class QueueMismatch(Exception):
    """The broker has a queue that differs from the one asked for (it refused the declaration)."""

    def __init__(self, queue: str, wanted_type: str, reply_text: str,
                 existing_type: str | None = None) -> None:
        self.queue, self.wanted_type, self.reply_text = queue, wanted_type, reply_text
        # The broker names the first argument that differs, not always x-queue-type: a probe of
        # the queue (`_probe_type`) may have told its type instead.
        self.existing_type = _existing_type(reply_text) or existing_type
        super().__init__(self.describe())

    @property
    def earlier_quorum(self) -> bool:
        """Whether the queue is a quorum queue declared before at-least-once dead-lettering."""
        return self.existing_type == EARLIER_QUORUM

    def describe(self) -> str:
        """One line saying what is wrong and what to do."""
        if self.earlier_quorum and self.wanted_type == QUORUM:
            return (f"quorum queue {self.queue!r} was declared without at-least-once "
                    f"dead-lettering (x-dead-letter-strategy, x-overflow), which RabbitMQ cannot "
                    f"add to an existing queue; stop every service and run `python -m "
                    f"ops.migrate_queues --to quorum` (docs/operations.md: Switching the queue type)")
        existing = QUORUM if self.earlier_quorum else self.existing_type
        if existing is not None and existing != self.wanted_type:
            return (f"queue {self.queue!r} is a {existing} queue on the broker but "
                    f"RABBITMQ_QUEUE_TYPE={self.wanted_type} asks for a {self.wanted_type} queue; "
                    f"set RABBITMQ_QUEUE_TYPE={existing}, or stop every service and run "
                    f"`python -m ops.migrate_queues --to {self.wanted_type}` (docs/operations.md: "
                    f"Switching the queue type)")
        return f"RabbitMQ refused to declare queue {self.queue!r}: {self.reply_text}"


_TYPE_CURRENT = re.compile(r"inequivalent arg 'x-queue-type'.* but current is "
                           r"(none|the value '(\w+)'|'(\w+)')")


def _existing_type(reply_text: str) -> str | None:
    """The queue type the broker's PRECONDITION_FAILED text says the queue has (None: not said)."""
    match = _TYPE_CURRENT.search(reply_text)
    if match is None:
        return None
    return match.group(2) or match.group(3) or CLASSIC  # no x-queue-type: a classic queue


EARLIER_QUORUM = "quorum (without at-least-once dead-lettering)"


def _earlier_quorum_arguments(queue: Queue) -> dict[str, str | int]:
    arguments = queue.arguments(QUORUM)
    for key in QUORUM_DEAD_LETTERING:
        arguments.pop(key, None)
    return arguments


def _probe_type(channel: BlockingChannel, name: str, queue: Queue) -> str | None:
    """The type of queue `name` on the broker, told by which declaration it accepts (each tried
    on a channel of its own: a refusal closes the channel). None when it accepts none."""
    candidates = {CLASSIC: queue.arguments(CLASSIC), QUORUM: queue.arguments(QUORUM)}
    if queue.dead_letter_key is not None:
        candidates[EARLIER_QUORUM] = _earlier_quorum_arguments(queue)
    for queue_type, arguments in candidates.items():
        probe = channel.connection.channel()
        try:
            probe.queue_declare(queue=name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker:
            continue
        probe.close()
        return queue_type
    return None


def declare(channel: BlockingChannel, queue_type: str = CLASSIC, part: Part = WHOLE) -> None:
    """Declare the whole topology (or one service's part); safe to call on every (re)connect, in
    any start order.

    Raises QueueMismatch when the broker refuses a queue as declared (e.g. of another type).
    """
    for exchange in part.exchanges:
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    for queue in part.queues:
        declare_queue(channel, queue, queue_type)


def declare_queue(channel: BlockingChannel, queue: Queue, queue_type: str = CLASSIC,
                  name: str | None = None) -> None:
    """Declare `queue` (under `name`, if given) as `queue_type`, with its bindings."""
    name = name or queue.name
    try:
        channel.queue_declare(queue=name, durable=True, arguments=queue.arguments(queue_type))
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == PRECONDITION_FAILED:
            existing = None if _existing_type(exc.reply_text) else _probe_type(channel, name, queue)
            raise QueueMismatch(name, queue_type, exc.reply_text, existing) from exc
        raise
    for exchange, key in queue.bindings:
        channel.queue_bind(queue=name, exchange=exchange, routing_key=key)

