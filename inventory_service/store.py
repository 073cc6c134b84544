"""InventoryService storage: stock levels, reservations, inbox and outbox in one SQLite file."""
from __future__ import annotations

import sqlite3
import time

from messaging.events import InventoryResult, OrderPlaced
from messaging.outbox import MessagingStore
from messaging.settings import StorageSettings

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

    def stock_of(self, conn: sqlite3.Connection, item: str) -> tuple[str, int] | None:
        """(menu name, units on hand) of `item`, matched case-insensitively; None if not on the menu."""
        row = conn.execute("SELECT item, available FROM stock WHERE item = ?", (item,)).fetchone()
        return None if row is None else (row[0], row[1])

    def has_outcome(self, conn: sqlite3.Connection, order_id: str) -> bool:
        """Tell whether this order already has a reservation outcome."""
        return conn.execute("SELECT 1 FROM reservations WHERE order_id = ?",
                            (order_id,)).fetchone() is not None

    def record(self, conn: sqlite3.Connection, event: OrderPlaced, item: str,
               result: InventoryResult) -> None:
        """Apply an outcome for menu item `item`: take the stock if reserved, remember the outcome."""
        if result.reserved:
            conn.execute("UPDATE stock SET available = available - ? WHERE item = ?",
                         (event.quantity, item))
        conn.execute(
            "INSERT INTO reservations (order_id, event_id, item, quantity, status, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.order_id, event.event_id, item, event.quantity,
             "reserved" if result.reserved else "failed", result.reason, time.time()))

    def stock_levels(self) -> list[dict]:
        """Every item with its initial and available units and what is reserved."""
        rows = self.conn.execute(
            "SELECT s.item, s.initial, s.available, COALESCE(SUM(r.quantity), 0) AS reserved"
            " FROM stock s LEFT JOIN reservations r ON r.item = s.item AND r.status = 'reserved'"
            " GROUP BY s.item ORDER BY s.item").fetchall()
        return [dict(row) for row in rows]

    def outcomes(self) -> dict[str, str]:
        """order_id -> 'reserved' | 'failed' for every order seen."""
        return dict(self.conn.execute("SELECT order_id, status FROM reservations").fetchall())
