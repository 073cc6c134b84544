"""The order domain: request validation, new orders, status changes and list queries. No I/O."""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from messaging import topology
from messaging.events import (
    ORDER_FIELDS,
    InventoryResult,
    Message,
    OrderPlaced,
    message_for,
    order_field_errors,
    storable_text,
)

ACCEPTED, RESERVED, FAILED = "accepted", "reserved", "failed"
STATUSES = (ACCEPTED, RESERVED, FAILED)
ACCEPTED_MESSAGE = "Order received and being processed"
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
# GET /orders pages with a cursor (`before`: where the last page ended), which costs an index seek
# however deep it goes. An offset is read and thrown away row by row, and a count walks every
# match, so both are bounded: a request costs at most about this many index entries.
MAX_OFFSET = COUNT_LIMIT = 10_000
MAX_CURSOR = 2**63 - 1  # the largest seq either backend stores


class InvalidRequest(ValueError):
    """A request that names its problems: {field: problem}."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        field, problem = next(iter(errors.items()))
        super().__init__(f"{field} {problem}")


@dataclass(frozen=True)
class Order:
    """An order as stored and shown."""

    order_id: str
    user_id: str
    item: str
    quantity: int
    status: str
    created_at: str
    updated_at: str
    reason: str | None = None

    def view(self) -> dict[str, Any]:
        """The JSON shape of GET /orders/{id}."""
        body = {"order_id": self.order_id, "user_id": self.user_id, "item": self.item,
                "quantity": self.quantity, "status": self.status,
                "created_at": self.created_at, "updated_at": self.updated_at}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


def validate(payload: Any) -> dict[str, Any]:
    """Check a POST /order body; return its fields or raise InvalidRequest."""
    if not isinstance(payload, dict):
        raise InvalidRequest({"body": "must be a JSON object"})
    quantity = payload.get("quantity")
    if isinstance(quantity, float) and quantity.is_integer():  # JSON's 2.0 is the integer 2
        payload = {**payload, "quantity": int(quantity)}
    errors = {field: "is not a known field" for field in payload if field not in ORDER_FIELDS}
    errors.update(order_field_errors(payload))
    if errors:
        raise InvalidRequest(errors)
    return {field: payload[field] for field in ORDER_FIELDS}


def place(fields: Mapping[str, Any], now: str,
          traceparent: str | None = None) -> tuple[Order, Message]:
    """Create an accepted order and the OrderPlaced message that announces it (in that trace)."""
    order = Order(order_id=str(uuid.uuid4()), user_id=fields["user_id"], item=fields["item"],
                  quantity=fields["quantity"], status=ACCEPTED, created_at=now, updated_at=now)
    event = OrderPlaced(event_id=str(uuid.uuid4()), order_id=order.order_id, timestamp=now,
                        user_id=order.user_id, item=order.item, quantity=order.quantity)
    return order, message_for(event, topology.ORDERS_EXCHANGE, topology.ORDER_PLACED_KEY,
                              traceparent)


def accepted_body(order_id: str, created_at: str) -> dict[str, str]:
    """The spec's 202 body for the order placed at `created_at` (and again on a replay)."""
    return {"order_id": order_id, "status": ACCEPTED, "message": ACCEPTED_MESSAGE,
            "timestamp": created_at}


def final_status(result: InventoryResult) -> tuple[str, str | None]:
    """The status (and failure reason) an inventory result moves an order to."""
    if result.reserved:
        return RESERVED, None
    return FAILED, result.reason or "inventory could not be reserved"


@dataclass(frozen=True)
class ListQuery:
    """Filters and page of GET /orders."""

    status: str | None = None
    user_id: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    before: int | None = None  # the cursor: only orders older than the one this names


@dataclass(frozen=True)
class OrderPage:
    """What GET /orders answers: a page, the cursor of the next one, how many orders match."""

    orders: list[Order]
    next: int | None  # None: this is the last page
    count: int  # at most COUNT_LIMIT
    count_capped: bool  # more than COUNT_LIMIT orders match

    def body(self) -> dict[str, Any]:
        return {"orders": [order.view() for order in self.orders],
                "next": None if self.next is None else str(self.next),
                "count": self.count, "count_capped": self.count_capped}


LIST_PARAMETERS = ("status", "user_id", "limit", "offset", "before")


def whole_number(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """The query parameter `name` as a whole number in [low, high], or `default`; else a 400."""
    raw = args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidRequest({name: f"must be a whole number from {low} to {high}"})
    return int(raw)


def user_filter(args: Mapping[str, str]) -> str | None:
    """The `user_id` query parameter (None when absent or empty); a 400 when no store holds it."""
    user_id = args.get("user_id") or None
    if user_id is not None and not storable_text(user_id):
        raise InvalidRequest({"user_id": "must be text without NUL characters"})
    return user_id


def list_query(args: Mapping[str, str]) -> ListQuery:
    """Parse GET /orders query parameters or raise InvalidRequest."""
    unknown = [name for name in args if name not in LIST_PARAMETERS]
    if unknown:
        raise InvalidRequest({unknown[0]: "is not a known query parameter"})
    status = args.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest({"status": f"must be one of {', '.join(STATUSES)}"})
    return ListQuery(status=status, user_id=user_filter(args),
                     limit=whole_number(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                     offset=whole_number(args, "offset", 0, 0, MAX_OFFSET),
                     before=whole_number(args, "before", 0, 1, MAX_CURSOR) if "before" in args else None)
