"""InventoryService storage: stock levels, reservations, inbox and outbox in one SQLite file."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from messaging.events import InventoryResult, OrderPlaced
from messaging.settings import StorageSettings
from messaging.storage import select_in
from messaging.store import MessagingStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    item TEXT PRIMARY KEY COLLATE NOCASE,
    initial INTEGER NOT NULL,
    available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'failed')),
    reason TEXT,
    created_at REAL NOT NULL
);
"""


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def nocase(text: str) -> str:
    """Fold `text` the way SQLite's NOCASE collation compares it (ASCII letters only)."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Outcome:
    """A decided reservation: the event, the menu name of its item, and the result to publish."""

    event: OrderPlaced
    item: str
    result: InventoryResult


class InventoryStore(MessagingStore):
    """The stock ledger; every write goes through `write()`."""

    def __init__(self, path: str, settings: StorageSettings) -> None:
        super().__init__(path, settings)
        self.conn.executescript(SCHEMA)

    def seed(self, menu: tuple[str, ...], initial: int) -> None:
        """Stock each menu item with `initial` units unless it is already stocked."""
        self.write(lambda conn: conn.executemany(
            "INSERT OR IGNORE INTO stock (item, initial, available) VALUES (?, ?, ?)",
            [(item, initial, initial) for item in menu]))

    def stock_for(self, conn: sqlite3.Connection, items: set[str]) -> dict[str, tuple[str, int]]:
        """nocase(item) -> (menu name, units on hand) for those of `items` that are on the menu."""
        rows = select_in(conn, "SELECT item, available FROM stock WHERE item IN ({})", items)
        return {nocase(row[0]): (row[0], row[1]) for row in rows}

    def outcomes_among(self, conn: sqlite3.Connection, order_ids: set[str]) -> set[str]:
        """Those of `order_ids` that already have a reservation outcome."""
        return {row[0] for row in select_in(
            conn, "SELECT order_id FROM reservations WHERE order_id IN ({})", order_ids)}

    def record(self, conn: sqlite3.Connection, outcomes: list[Outcome]) -> None:
        """Apply outcomes: take the stock of the reserved ones, remember every outcome."""
        taken: dict[str, int] = {}
        for o in outcomes:
            if o.result.reserved:
                taken[o.item] = taken.get(o.item, 0) + o.event.quantity
        conn.executemany("UPDATE stock SET available = available - ? WHERE item = ?",
                         [(quantity, item) for item, quantity in taken.items()])
        now = time.time()
        conn.executemany(
            "INSERT INTO reservations (order_id, event_id, item, quantity, status, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(o.event.order_id, o.event.event_id, o.item, o.event.quantity,
              "reserved" if o.result.reserved else "failed", o.result.reason, now)
             for o in outcomes])

    def stock_levels(self) -> list[dict]:
        """Every item with its initial and available units and what is reserved."""
        rows = self.conn.execute(
            "SELECT s.item, s.initial, s.available, COALESCE(SUM(r.quantity), 0) AS reserved"
            " FROM stock s LEFT JOIN reservations r ON r.item = s.item AND r.status = 'reserved'"
            " GROUP BY s.item ORDER BY s.item").fetchall()
        return [dict(row) for row in rows]

    def answered_events(self) -> dict[str, str]:
        """order_id -> event_id of the OrderPlaced event its reservation decision answered."""
        return dict(self.conn.execute("SELECT order_id, event_id FROM reservations").fetchall())

    def outcomes(self) -> dict[str, str]:
        """order_id -> 'reserved' | 'failed' for every order seen."""
        return dict(self.conn.execute("SELECT order_id, status FROM reservations").fetchall())
