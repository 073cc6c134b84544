"""Reservation decisions: pure functions of OrderPlaced events and the stock on hand."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from inventory_service.store import Outcome, nocase  # a record and a text fold: no I/O
from messaging import topology
from messaging.events import (
    INVENTORY_FAILED,
    INVENTORY_RESERVED,
    InventoryResult,
    Message,
    OrderPlaced,
    message_for,
)

# Result events get a deterministic identity derived from the OrderPlaced event they answer,
# so a result re-published after a crash carries the same event_id and is recognised downstream.
RESULT_NAMESPACE = uuid.UUID("5f1d3c1e-8a4b-4f43-9a51-3f0c2e7d9b10")

LogLine = tuple[OrderPlaced, tuple]  # the event a log line is about, and the logger's arguments


def result_event_id(order_placed_event_id: str) -> str:
    """The event_id of the result that answers the OrderPlaced event with this event_id."""
    return str(uuid.uuid5(RESULT_NAMESPACE, order_placed_event_id))


@dataclass(frozen=True)
class Decision:
    """Whether to reserve, and why not."""

    reserved: bool
    reason: str | None = None


def passes_check(order_id: str, success_rate: float) -> bool:
    """The spec's simulated inventory check, deterministic per order so a replay decides the same."""
    digest = hashlib.sha256(order_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < success_rate


def decide(event: OrderPlaced, available: int | None, success_rate: float) -> Decision:
    """Decide a reservation from the stock on hand (None: the item is not on the menu)."""
    if available is None:
        return Decision(False, f"unknown item: {event.item}")
    if available < event.quantity:
        return Decision(False, f"insufficient stock: {available} {event.item} left, "
                               f"{event.quantity} requested")
    if not passes_check(event.order_id, success_rate):
        return Decision(False, "inventory check failed")
    return Decision(True)


def result_for(event: OrderPlaced, decision: Decision, timestamp: str) -> InventoryResult:
    """Build the InventoryReserved/InventoryFailed event answering `event`."""
    return InventoryResult(
        event_id=result_event_id(event.event_id),
        event_type=INVENTORY_RESERVED if decision.reserved else INVENTORY_FAILED,
        order_id=event.order_id, timestamp=timestamp, user_id=event.user_id, item=event.item,
        quantity=event.quantity, reason=decision.reason)


def result_message(result: InventoryResult, traceparent: str | None = None) -> Message:
    """Route a result to exchange `inventory` under inventory.reserved or inventory.failed."""
    key = topology.INVENTORY_RESERVED_KEY if result.reserved else topology.INVENTORY_FAILED_KEY
    return message_for(result, topology.INVENTORY_EXCHANGE, key, traceparent)


def reserve(placed: list[OrderPlaced], fresh: set[str], decided: set[str],
            stock: dict[str, tuple[str, int]], success_rate: float, now: str,
            ) -> tuple[list[Outcome], list[LogLine]]:
    """Decide a batch in delivery order against the stock as the batch leaves it.

    `fresh`: the event ids not seen before this batch; `decided`: the order ids with an outcome
    already; `stock`: nocase(item) -> (menu name, units on hand). An event seen before, or one
    for an order decided before or earlier in the batch, is a duplicate: skipped, with a log line.
    Returns the outcomes of the others and every log line, in delivery order; changes no argument.
    """
    fresh, decided, stock = set(fresh), set(decided), dict(stock)
    outcomes: list[Outcome] = []
    lines: list[LogLine] = []
    for event in placed:
        if event.event_id not in fresh or event.order_id in decided:
            lines.append((event, ("Duplicate OrderPlaced detected, skipping: order_id=%s event_id=%s",
                                  event.order_id, event.event_id)))
            continue
        fresh.discard(event.event_id)  # a second copy in this very batch is a duplicate too
        decided.add(event.order_id)
        key = nocase(event.item)
        item, available = stock.get(key, (event.item, None))
        decision = decide(event, available, success_rate)
        outcomes.append(Outcome(event, item, result_for(event, decision, now)))
        if decision.reserved and available is not None:  # reserved only ever from known stock
            stock[key] = (item, available - event.quantity)
            lines.append((event, ("Inventory reserved: order_id=%s event_id=%s item=%s quantity=%d",
                                  event.order_id, event.event_id, item, event.quantity)))
        else:
            lines.append((event, ("Inventory failed: order_id=%s event_id=%s item=%s reason=%s",
                                  event.order_id, event.event_id, event.item, decision.reason)))
    return outcomes, lines
