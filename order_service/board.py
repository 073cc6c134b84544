"""The order board the page polls: its query, its validator (ETag), its counts and body. No I/O.

Orders are never deleted, and a status only moves from `accepted` to `reserved` or `failed`. So
every committed change raises the newest order's seq or lowers the number of accepted orders (two
index lookups: the change marks). The accepted orders are counted up to CHANGE_MARK_LIMIT, so a poll
costs the same when tens of thousands wait (InventoryService away at lunchtime); past the limit a
status change shows through the counts instead, within a second. Counting orders per status takes a
scan of every order (of the user), so the counts are recounted at most once a second per process and
user, however many pages ask; the marks are read on every poll. The validator holds both, so a
change shows at the next poll, and the counts within a second. The list itself is read only when the
validator differs from the page's ETag.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from order_service.handlers import STATUSES, InvalidRequest, Order, user_filter, whole_number

DEFAULT_ROWS, MAX_ROWS = 20, 100
COUNTS_MAX_AGE = 1.0  # seconds everyone's counts per status may be reused
CHANGE_MARK_LIMIT = 1000  # accepted orders counted on a poll, at the most
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
    marks: tuple[int, ...] = ()

    @property
    def etag(self) -> str:
        """A strong entity tag, unquoted; the URL carries the user and the limit."""
        parts = [*self.marks, *(self.counts[status] for status in STATUSES),
                 int(self.broker_connected), self.outbox_backlog]
        return ".".join(str(part) for part in parts)


class CachedCounts:
    """Counts per status by user (None: everyone's), each recounted by `count(user_id)` at most
    once per `max_age` seconds; the `size` users recounted last are kept."""

    def __init__(self, count: Callable[[str | None], Mapping[str, int]],
                 max_age: float = COUNTS_MAX_AGE, size: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._count, self._max_age, self._size, self._clock = count, max_age, size, clock
        self._lock = threading.Lock()
        self._kept: OrderedDict[str | None, tuple[float, Mapping[str, int]]] = OrderedDict()

    def get(self, user_id: str | None = None) -> Mapping[str, int]:
        """The counts, recounted first if they are older than `max_age`.

        While one thread recounts, the others answer with the counts they have, if any, instead
        of waiting for it.
        """
        kept = self._kept.get(user_id)
        if kept is not None and self._clock() - kept[0] < self._max_age:
            return kept[1]
        if not self._lock.acquire(blocking=kept is None):
            assert kept is not None  # only an acquire that does not block can fail
            return kept[1]
        try:
            now = self._clock()
            kept = self._kept.get(user_id)
            if kept is None or now - kept[0] >= self._max_age:
                self._kept[user_id] = kept = (now, self._count(user_id))
                self._kept.move_to_end(user_id)
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
            return kept[1]
        finally:
            self._lock.release()


def board_query(args: Mapping[str, str]) -> BoardQuery:
    """Parse GET /orders/board query parameters or raise InvalidRequest."""
    unknown = [name for name in args if name not in PARAMETERS]
    if unknown:
        raise InvalidRequest({unknown[0]: "is not a known query parameter"})
    limit = whole_number(args, "limit", DEFAULT_ROWS, 1, MAX_ROWS)
    return BoardQuery(user_id=user_filter(args), limit=limit)


def summary(counts: Mapping[str, int], broker_connected: bool, outbox_backlog: int,
            marks: tuple[int, ...] = ()) -> Summary:
    """The validator's parts, with a zero for every status nobody's order is in."""
    return Summary({status: int(counts.get(status, 0)) for status in STATUSES},
                   broker_connected, outbox_backlog, marks)


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
