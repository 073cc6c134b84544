"""Builders for events, bodies and deliveries shared by the unit tests (no broker involved)."""
from __future__ import annotations

import json
import uuid
from typing import Any

import pika

from messaging import events
from messaging.amqp.delivery import Delivery
from messaging.events import INVENTORY_RESERVED, InventoryResult, OrderPlaced

TIMESTAMP = "2026-02-11T00:00:00.000000Z"


def order_placed(**overrides: Any) -> OrderPlaced:
    """A valid OrderPlaced event with fresh ids; override any field."""
    fields = dict(event_id=str(uuid.uuid4()), order_id=str(uuid.uuid4()), timestamp=TIMESTAMP,
                  user_id="user123", item="Burger", quantity=2)
    fields.update(overrides)
    return OrderPlaced(**fields)


def inventory_result(**overrides: Any) -> InventoryResult:
    """A valid InventoryReserved event with fresh ids; override any field."""
    fields = dict(event_id=str(uuid.uuid4()), event_type=INVENTORY_RESERVED,
                  order_id=str(uuid.uuid4()), timestamp=TIMESTAMP, user_id="user123",
                  item="Burger", quantity=2)
    fields.update(overrides)
    return InventoryResult(**fields)


def payload_of(event: OrderPlaced | InventoryResult) -> dict[str, Any]:
    """The event's wire body as a dict, ready to be spoiled by a test."""
    return json.loads(events.encode(event))


def to_body(payload: Any) -> bytes:
    """Serialise any JSON value to a message body."""
    return json.dumps(payload).encode()


_tags = iter(range(1, 10**9))


def delivery(body: bytes, redelivered: bool = False) -> Delivery:
    """A hand-built delivery as the consume loop would pass it."""
    return Delivery(tag=next(_tags), exchange="orders", routing_key="order.placed",
                    redelivered=redelivered, properties=pika.BasicProperties(), body=body)
