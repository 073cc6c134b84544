"""What a consumer handles: a delivery as taken from its queue, and a rejection bound for the DLQ."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pika

from messaging.amqp.header_values import UNDECODABLE, unreadable
from messaging.events import Poison
from messaging.observability.spans import Span
from messaging.observability.trace_context import TraceContext

T = TypeVar("T")
TOO_LARGE = "too-large"
UNEXPECTED_SENDER = "unexpected-sender"


@dataclass(frozen=True)
class Delivery:
    """One message as taken from the queue."""

    tag: int
    exchange: str
    routing_key: str
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes
    span: Span | None = None  # its handling, in the trace its `traceparent` header continues


@dataclass(frozen=True)
class Rejection:
    """A delivery that must go to the dead-letter queue, and why."""

    delivery: Delivery
    reason: str
    error: str
    attempts: int = 1


# A service's handler: commit the effects of a batch, return the deliveries it rejects.
BatchHandler = Callable[[list[Delivery]], list[Rejection]]


def parse_all(deliveries: list[Delivery], parse: Callable[[bytes], T]) -> tuple[list[T], list[Rejection]]:
    """Parse every body; the poison ones (`Poison` raised) become rejections with their reason."""
    parsed: list[T] = []
    rejections: list[Rejection] = []
    for delivery in deliveries:
        try:
            parsed.append(parse(delivery.body))
        except Poison as poison:
            rejections.append(Rejection(delivery, poison.reason, str(poison)))
    return parsed, rejections


def split_unfit(deliveries: list[Delivery], max_bytes: int,
                sender: str | None = None) -> tuple[list[Delivery], list[Rejection]]:
    """Split off what no handler should see: a message not published by `sender` (the broker user
    entitled to publish to the queue, when it is checked), a body over `max_bytes`, or properties
    that could not be decoded as sent. All are poison, whatever the body says, and are never parsed."""
    keep: list[Delivery] = []
    rejections: list[Rejection] = []
    for delivery in deliveries:
        notes = unreadable(delivery.properties)
        if sender is not None and delivery.properties.user_id != sender:
            rejections.append(Rejection(delivery, UNEXPECTED_SENDER, _sender_error(delivery, sender)))
        elif len(delivery.body) > max_bytes:
            rejections.append(Rejection(delivery, TOO_LARGE, f"a body of {len(delivery.body)} bytes, "
                                        f"over MAX_MESSAGE_BYTES ({max_bytes})"))
        elif notes:
            rejections.append(Rejection(delivery, UNDECODABLE, "; ".join(notes)))
        else:
            keep.append(delivery)
    return keep, rejections


def _sender_error(delivery: Delivery, sender: str) -> str:
    user = delivery.properties.user_id
    published = f"published by broker user {user!r}" if user else "published without a user_id"
    return f"{published}; only {sender!r} may publish to this queue"


def delivery_key(delivery: Delivery) -> str:
    """Identify a message across redeliveries: its message_id, else a hash of its body."""
    if delivery.properties.message_id:
        return f"id:{delivery.properties.message_id}"
    return "sha256:" + hashlib.sha256(delivery.body).hexdigest()


def traces(deliveries: list[Delivery]) -> dict[str, TraceContext]:
    """message_id (an event's event_id) -> the trace context its handling runs in."""
    return {d.properties.message_id: d.span.context for d in deliveries
            if d.span is not None and d.properties.message_id}


def end_spans(deliveries: list[Delivery], rejections: list[Rejection]) -> None:
    """Finish the handling spans of a settled batch, the dead-lettered ones marked as failed."""
    reasons = {id(r.delivery): r.reason for r in rejections}
    for delivery in deliveries:
        if delivery.span is not None:
            delivery.span.end(reasons.get(id(delivery)))
