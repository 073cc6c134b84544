"""The order board the page polls: its query, its validator (ETag) and its JSON body. No I/O.

Orders are never deleted, and a status only moves from `accepted` to `reserved` or `failed`. So
every committed change (a new order, a final status) raises the total or the number of reserved
or failed orders, and the counts per status identify the state of a user's (or everyone's)
orders: they are the board's validator, read with one small GROUP BY. The list itself is read
only when the counts (or the broker link, or the outbox backlog) differ from the page's ETag.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from order_service.handlers import STATUSES, InvalidRequest, Order

DEFAULT_ROWS, MAX_ROWS = 20, 100
PARAMETERS = ("user_id", "limit")


@dataclass(frozen=True)
class BoardQuery:
    """Whose orders (None: everyone's) and how many rows of them."""

    user_id: str | None = None
    limit: int = DEFAULT_ROWS


@dataclass(frozen=True)
class Summary:
    """What the validator is made of: counts per status, the broker link and the outbox backlog."""

    counts: dict[str, int]
    broker_connected: bool
    outbox_backlog: int

    @property
    def etag(self) -> str:
        """A strong entity tag, unquoted; the URL carries the user and the limit."""
        counts = ".".join(str(self.counts[status]) for status in STATUSES)
        return f"{counts}.{int(self.broker_connected)}.{self.outbox_backlog}"


def board_query(args: Mapping[str, str]) -> BoardQuery:
    """Parse GET /orders/board query parameters or raise InvalidRequest."""
    unknown = [name for name in args if name not in PARAMETERS]
    if unknown:
        raise InvalidRequest({unknown[0]: "is not a known query parameter"})
    raw = args.get("limit")
    limit = DEFAULT_ROWS
    if raw is not None:
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ROWS:
            raise InvalidRequest({"limit": f"must be a whole number from 1 to {MAX_ROWS}"})
        limit = int(raw)
    return BoardQuery(user_id=args.get("user_id") or None, limit=limit)


def summary(counts: Mapping[str, int], broker_connected: bool, outbox_backlog: int) -> Summary:
    """The validator's parts, with a zero for every status nobody's order is in."""
    return Summary({status: int(counts.get(status, 0)) for status in STATUSES},
                   broker_connected, outbox_backlog)


def board_body(query: BoardQuery, state: Summary, orders: list[Order]) -> dict[str, Any]:
    """The JSON body of GET /orders/board."""
    return {
        "user_id": query.user_id,
        "orders": [order.view() for order in orders],
        "count": sum(state.counts.values()),
        "counts": state.counts,
        "broker": "connected" if state.broker_connected else "disconnected",
        "outbox_backlog": state.outbox_backlog,
    }
