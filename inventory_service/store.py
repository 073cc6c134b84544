"""InventoryService storage: stock levels, reservations, inbox and outbox in one database."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from messaging.db.backend import Backend, Connection
from messaging.db.dialect import Dialect
from messaging.db.messaging_store import MessagingStore
from messaging.db.migrations import migrate
from messaging.db.sqlite import select_in
from messaging.events import InventoryResult, OrderPlaced

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    item TEXT PRIMARY KEY{nocase},
    initial {int} NOT NULL,
    available {int} NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity {int} NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'failed')),
    reason TEXT,
    created_at {real} NOT NULL
);
"""


def _schema(dialect: Dialect) -> str:
    if not dialect.fold_needs_index:
        return SCHEMA
    return SCHEMA + ("CREATE UNIQUE INDEX IF NOT EXISTS stock_by_folded_item ON stock ("
                     + dialect.fold("item") + ");\n")


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

    FILENAME = "inventory.db"

    def __init__(self, db: Backend) -> None:
        super().__init__(db)
        migrate(db, "inventory", [_schema(db.dialect)])
        self._stock_query = ("SELECT item, available FROM stock WHERE " + self.dialect.fold("item")
                             + " IN ({})")

    def seed(self, menu: tuple[str, ...], initial: int) -> None:
        """Stock each menu item with `initial` units unless it is already stocked."""
        self.write(lambda conn: conn.executemany(
            "INSERT INTO stock (item, initial, available) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(item, initial, initial) for item in menu]))

    def lock_ledger(self, conn: Connection) -> None:
        """Make this transaction the ledger's only writer until it ends.

        Deciding a batch reads the stock and the outcomes, then writes what follows from them, so
        two replicas must not do it at once. SQLite's write lock already sees to that; PostgreSQL
        queues them on an advisory lock.
        """
        if self.dialect.lock_writers:
            conn.execute(self.dialect.lock_writers, ("inventory-ledger",))

    def stock_for(self, conn: Connection, items: set[str]) -> dict[str, tuple[str, int]]:
        """nocase(item) -> (menu name, units on hand) for those of `items` that are on the menu."""
        rows = select_in(conn, self._stock_query, {nocase(item) for item in items})
        return {nocase(row[0]): (row[0], row[1]) for row in rows}

    def outcomes_among(self, conn: Connection, order_ids: set[str]) -> set[str]:
        """Those of `order_ids` that already have a reservation outcome."""
        return {row[0] for row in select_in(
            conn, "SELECT order_id FROM reservations WHERE order_id IN ({})", order_ids)}

    def record(self, conn: Connection, outcomes: list[Outcome]) -> None:
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

    def stock_levels(self) -> list[dict[str, Any]]:
        """Every item with its initial and available units and what is reserved."""
        rows = self.conn.execute(
            "SELECT s.item, s.initial, s.available,"
            " CAST(COALESCE(SUM(r.quantity), 0) AS BIGINT) AS reserved"
            " FROM stock s LEFT JOIN reservations r ON r.item = s.item AND r.status = 'reserved'"
            f" GROUP BY s.item ORDER BY {self.dialect.fold('s.item')}").fetchall()
        return [dict(row) for row in rows]

    def answered_events(self) -> dict[str, str]:
        """order_id -> event_id of the OrderPlaced event its reservation decision answered."""
        return dict(self.conn.execute("SELECT order_id, event_id FROM reservations").fetchall())

    def decided_before(self, cutoff: float) -> set[str]:
        """The orders whose reservation was decided before `cutoff` (seconds since the epoch)."""
        return {row[0] for row in self.conn.execute(
            "SELECT order_id FROM reservations WHERE created_at < ?", (cutoff,))}

    def outcomes(self) -> dict[str, str]:
        """order_id -> 'reserved' | 'failed' for every order seen."""
        return dict(self.conn.execute("SELECT order_id, status FROM reservations").fetchall())
