"""What to tell the user: a pure function of an inventory result."""
from __future__ import annotations

from messaging.events import InventoryResult


def notification_for(result: InventoryResult) -> str | None:
    """The notification text for a reservation; None for anything else (never for a failure)."""
    if not result.reserved:
        return None
    return (f"Your order of {result.quantity} x {result.item} is confirmed and being prepared "
            f"(order {result.order_id})")
