"""Event contracts: the JSON shapes on the wire, their validation and their AMQP envelope."""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ORDER_PLACED = "OrderPlaced"
INVENTORY_RESERVED = "InventoryReserved"
INVENTORY_FAILED = "InventoryFailed"

MAX_TEXT_LENGTH = 64
MAX_QUANTITY = 100
MAX_REASON_LENGTH = 200
ORDER_FIELDS = ("user_id", "item", "quantity")
# What no name needs and what forges log lines or disguises text: controls (Cc: newlines, escape
# sequences), format characters (Cf: bidirectional overrides, zero-width spaces, the BOM) and the
# line and paragraph separators. ZWNJ and ZWJ are format characters that Persian, the Indic scripts
# and emoji sequences spell names with, so they stay.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
NAME_JOINERS = frozenset({"\u200c", "\u200d"})


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Poison(ValueError):
    """A message that can never be processed; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def utc_now() -> str:
    """Return the current time as ISO-8601 UTC with a trailing Z."""
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def order_field_errors(payload: dict[str, Any]) -> dict[str, str]:
    """Return {field: problem} for the order fields of `payload`; empty when they are valid."""
    errors: dict[str, str] = {}
    for field in ("user_id", "item"):
        value = payload.get(field)
        if field not in payload:
            errors[field] = "is required"
        elif not isinstance(value, str) or not value.strip():
            errors[field] = "must be a non-empty string"
        elif len(value) > MAX_TEXT_LENGTH:
            errors[field] = f"must be at most {MAX_TEXT_LENGTH} characters"
        elif not storable_text(value):
            errors[field] = "must be valid Unicode text without NUL characters"
        elif (hidden := first_hidden(value)) is not None:
            errors[field] = f"must not contain control or format characters (found U+{ord(hidden):04X})"
    quantity = payload.get("quantity")
    if "quantity" not in payload:
        errors["quantity"] = "is required"
    elif not isinstance(quantity, int) or isinstance(quantity, bool):
        errors["quantity"] = "must be an integer"
    elif not 1 <= quantity <= MAX_QUANTITY:
        errors["quantity"] = f"must be between 1 and {MAX_QUANTITY}"
    return errors


def is_hidden(char: str) -> bool:
    """Whether `char` is a control, format or separator character no name needs."""
    return unicodedata.category(char) in HIDDEN_CATEGORIES and char not in NAME_JOINERS


def first_hidden(text: str) -> str | None:
    """The first control, format or separator character in `text`; None when it has none."""
    if text.isprintable():  # the common case: printable text holds none of them
        return None
    return next((char for char in text if is_hidden(char)), None)


def storable_text(text: str) -> bool:
    """Whether every store can hold `text`: PostgreSQL cannot hold U+0000, UTF-8 no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@dataclass(frozen=True)
class OrderPlaced:
    """OrderService's event: an order was accepted."""

    event_id: str
    order_id: str
    timestamp: str
    user_id: str
    item: str
    quantity: int
    event_type: str = ORDER_PLACED


@dataclass(frozen=True)
class InventoryResult:
    """InventoryService's event: stock was reserved, or could not be."""

    event_id: str
    event_type: str
    order_id: str
    timestamp: str
    user_id: str
    item: str
    quantity: int
    reason: str | None = None

    @property
    def reserved(self) -> bool:
        return self.event_type == INVENTORY_RESERVED


def encode(event: OrderPlaced | InventoryResult) -> bytes:
    """Serialise an event to its JSON body (no `reason` key on success)."""
    body = {key: value for key, value in vars(event).items() if value is not None}
    return json.dumps(body, separators=(",", ":")).encode()


def _decode_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Poison("malformed-json", f"body is not JSON: {exc!r}"[:300]) from None
    if not isinstance(payload, dict):
        raise Poison("not-an-object", f"body is a JSON {type(payload).__name__}, not an object")
    return payload


def _require_uuid(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        return _bad(field, "must be a UUID")
    return value.lower()


def _require_timestamp(payload: dict[str, Any]) -> str:
    value = payload.get("timestamp")
    if not isinstance(value, str):
        return _bad("timestamp", "must be an ISO-8601 string")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _bad("timestamp", "must be an ISO-8601 string")
    return value


def _bad(field: str, problem: str) -> Any:
    raise Poison("invalid-field", f"{field} {problem}")


def _check_common(payload: dict[str, Any], expected_types: tuple[str, ...]) -> None:
    event_type = payload.get("event_type")
    if event_type not in expected_types:
        raise Poison("unknown-event-type", f"event_type {event_type!r} is not one of {expected_types}")
    errors = order_field_errors(payload)
    if errors:
        field, problem = next(iter(errors.items()))
        raise Poison("invalid-field", f"{field} {problem}")


def parse_order_placed(body: bytes) -> OrderPlaced:
    """Decode and validate an OrderPlaced body, raising Poison when it can never be processed."""
    payload = _decode_object(body)
    _check_common(payload, (ORDER_PLACED,))
    return OrderPlaced(
        event_id=_require_uuid(payload, "event_id"),
        order_id=_require_uuid(payload, "order_id"),
        timestamp=_require_timestamp(payload),
        user_id=payload["user_id"],
        item=payload["item"],
        quantity=payload["quantity"],
    )


def parse_inventory_result(body: bytes) -> InventoryResult:
    """Decode and validate an InventoryReserved/InventoryFailed body, raising Poison if it is bad."""
    payload = _decode_object(body)
    _check_common(payload, (INVENTORY_RESERVED, INVENTORY_FAILED))
    reason = payload.get("reason")
    if reason is not None and not isinstance(reason, str):
        _bad("reason", "must be a string")
    return InventoryResult(
        event_id=_require_uuid(payload, "event_id"),
        event_type=payload["event_type"],
        order_id=_require_uuid(payload, "order_id"),
        timestamp=_require_timestamp(payload),
        user_id=payload["user_id"],
        item=payload["item"],
        quantity=payload["quantity"],
        reason=reason[:MAX_REASON_LENGTH] if reason else None,
    )


@dataclass(frozen=True)
class Message:
    """An outgoing message: where it goes, its body and its identity."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    correlation_id: str
    type: str
    traceparent: str | None = None  # the W3C trace context it carries in its AMQP headers


def message_for(event: OrderPlaced | InventoryResult, exchange: str, routing_key: str,
                traceparent: str | None = None) -> Message:
    """Wrap an event in its envelope: message_id = event_id, correlation_id = order_id."""
    return Message(exchange, routing_key, encode(event), event.event_id, event.order_id,
                   event.event_type, traceparent)
