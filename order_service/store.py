"""OrderService storage: orders and their outbox in one database (SQLite file or PostgreSQL)."""
from __future__ import annotations

import time

from messaging.db import outbox
from messaging.db.backend import Backend, Connection, Row
from messaging.db.messaging_store import MessagingStore
from messaging.db.migrations import migrate
from messaging.db.outbox import PendingMessage
from messaging.db.sqlite import chunks, select_in
from messaging.events import Message
from order_service.board import CHANGE_MARK_LIMIT
from order_service.handlers import ACCEPTED, COUNT_LIMIT, ListQuery, Order, OrderPage
from order_service.idempotency import DEFAULT_WINDOW, Earlier, KeyInProgress, RequestKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    seq {id},
    order_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity {int} NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, seq);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, seq);
"""
ORDER_COLUMNS = ("order_id", "user_id", "item", "quantity", "status", "created_at", "updated_at", "reason")
COLUMNS = ", ".join(ORDER_COLUMNS)
INSERT_ORDER = f"INSERT INTO orders ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# Step 2: a user's accepted orders are an index range, so the board's change mark for one user is
# bounded by the mark's limit, not by how many orders the user ever placed.
BY_USER_AND_STATUS = "CREATE INDEX IF NOT EXISTS orders_by_user_status ON orders (user_id, status);"
# Step 3: the Idempotency-Key of each order placed with one, kept for IDEMPOTENCY_RETENTION.
IDEMPOTENCY_KEYS = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    id {id},
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_at {real} NOT NULL,
    UNIQUE (scope, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
"""
STEPS = (SCHEMA, BY_USER_AND_STATUS, IDEMPOTENCY_KEYS)
EARLIER = ("SELECT k.fingerprint, k.order_id, o.created_at FROM idempotency_keys k"
           " JOIN orders o ON o.order_id = k.order_id"
           " WHERE k.scope = ? AND k.idempotency_key = ? AND k.created_at >= ?")


def _order(row: Row) -> Order:
    return Order(**{name: row[name] for name in ORDER_COLUMNS})


def _order_values(order: Order) -> tuple[str | int | None, ...]:
    return (order.order_id, order.user_id, order.item, order.quantity, order.status,
            order.created_at, order.updated_at, order.reason)


def _earlier(row: Row | None) -> Earlier | None:
    return None if row is None else Earlier(row[0], row[1], row[2])


class OrderStore(MessagingStore):
    """Orders, written together with their events (transactional outbox)."""

    FILENAME = "orders.db"

    RETAINED = MessagingStore.RETAINED + (("idempotency_keys", "id", "created_at"),)

    def __init__(self, db: Backend) -> None:
        super().__init__(db)
        migrate(db, "orders", STEPS)
        self.windows = {"idempotency_keys": DEFAULT_WINDOW}

    def keep_keys_for(self, window: float) -> None:
        """Keep Idempotency-Keys for `window` seconds (IDEMPOTENCY_RETENTION)."""
        self.windows = {"idempotency_keys": window}

    def add(self, order: Order, message: Message,
            claimant: str | None = None) -> PendingMessage | None:
        """Store a new order and its OrderPlaced event in one transaction; return the outbox row.

        None when the outbox already holds a message with this message_id (see `outbox.add_with`).
        """
        return outbox.add_with(self.db, INSERT_ORDER, _order_values(order), message, claimant)

    def earlier(self, asked: RequestKey) -> Earlier | None:
        """What this key placed within the window, if anything (a read: no write lock taken)."""
        cutoff = time.time() - self.windows["idempotency_keys"]
        return _earlier(self.conn.execute(EARLIER, (asked.scope, asked.key, cutoff)).fetchone())

    def add_keyed(self, order: Order, message: Message, claimant: str | None,
                  asked: RequestKey) -> tuple[PendingMessage | None, Earlier | None]:
        """Store the key, the order and its event in one transaction: (the outbox row, None).

        If the key placed an order within the window already, store nothing: (None, what it
        placed). On PostgreSQL a request placing the same key in another process at this moment
        is waited for, then its order is the earlier one. A key past the window is forgotten
        here, whether or not it was pruned yet.
        """
        now = time.time()

        def place(conn: Connection) -> tuple[PendingMessage | None, Earlier | None]:
            cutoff = now - self.windows["idempotency_keys"]
            conn.execute("DELETE FROM idempotency_keys WHERE scope = ? AND idempotency_key = ?"
                         " AND created_at < ?", (asked.scope, asked.key, cutoff))
            if not conn.execute(
                    "INSERT INTO idempotency_keys (scope, idempotency_key, fingerprint, order_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                    (asked.scope, asked.key, asked.fingerprint, order.order_id, now)).fetchall():
                earlier = _earlier(conn.execute(EARLIER, (asked.scope, asked.key, cutoff)).fetchone())
                if earlier is None:  # not for an order: can only be a key being placed elsewhere
                    raise KeyInProgress(f"{asked.key!r} is being placed")
                return None, earlier
            conn.execute(INSERT_ORDER, _order_values(order))
            pending = outbox.add_many(conn, [message], claimant)
            return (pending[0] if pending else None), None

        return self.write(place)

    def get(self, order_id: str) -> Order | None:
        """One order, or None."""
        row = self.conn.execute(f"SELECT {COLUMNS} FROM orders WHERE order_id = ?",
                                (order_id,)).fetchone()
        return None if row is None else _order(row)

    def find(self, query: ListQuery) -> OrderPage:
        """A page of orders matching the filters, newest first, where the cursor says; the cursor of
        the next page; how many orders match (counted up to COUNT_LIMIT)."""
        where: list[str] = []
        params: list[str | int] = []
        for column in ("status", "user_id"):
            if getattr(query, column) is not None:
                where.append(f"{column} = ?")
                params.append(getattr(query, column))
        matching = f" WHERE {' AND '.join(where)}" if where else ""
        count = self.conn.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM orders{matching} LIMIT ?) AS m",
                                  [*params, COUNT_LIMIT + 1]).fetchone()[0]
        if query.before is not None:
            where.append("seq < ?")
            params.append(query.before)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.conn.execute(
            f"SELECT seq, {COLUMNS} FROM orders{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, query.limit + 1, query.offset]).fetchall()  # one more: is there a next page?
        page = rows[:query.limit]
        return OrderPage([_order(row) for row in page],
                         page[-1]["seq"] if len(rows) > query.limit else None,
                         min(count, COUNT_LIMIT), count > COUNT_LIMIT)

    def finish_many(self, conn: Connection, changes: list[tuple[str, str, str | None]],
                    now: str, created: dict[str, str] | None = None) -> list[str]:
        """Apply (order_id, status, reason) changes with one UPDATE per chunk; outcome per change.

        Only an accepted order changes. A change is 'updated' if it moved its order, 'duplicate'
        if the order was already final (or moved by an earlier change in the list), 'unknown' if
        there is no such order. `created`, when given, gets the created_at of each order moved.
        """
        first: dict[str, tuple[str, str, str | None]] = {}
        for change in changes:  # a later change to the same order can only be a duplicate
            first.setdefault(change[0], change)
        moved: dict[str, str] = {}
        known: set[str] = set()
        for chunk in chunks(list(first.values())):
            moved.update((row[0], row[1]) for row in conn.execute(
                "UPDATE orders SET status = v.column2, reason = v.column3, updated_at = ?"
                f" FROM (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}) AS v"
                " WHERE orders.order_id = v.column1 AND orders.status = ?"
                " RETURNING orders.order_id, orders.created_at",
                [now, *(value for change in chunk for value in change), ACCEPTED]))
            known.update(row[0] for row in select_in(
                conn, "SELECT order_id FROM orders WHERE order_id IN ({})",
                {order_id for order_id, _, _ in chunk} - moved.keys()))
        if created is not None:
            created.update(moved)
        updated = set(moved)
        outcomes: list[str] = []
        for order_id, _, _ in changes:
            if order_id in updated:
                outcomes.append("updated")
                updated.discard(order_id)
                known.add(order_id)
            else:
                outcomes.append("duplicate" if order_id in known else "unknown")
        return outcomes

    def statuses(self) -> dict[str, str]:
        """order_id -> status for every order."""
        return dict(self.conn.execute("SELECT order_id, status FROM orders"))

    def keyed_orders(self) -> list[str]:
        """The order_id every stored Idempotency-Key names."""
        return [row[0] for row in self.conn.execute("SELECT order_id FROM idempotency_keys")]

    def status_counts(self) -> dict[str, int]:
        """How many orders are in each status."""
        return dict(self.conn.execute("SELECT status, COUNT(*) FROM orders GROUP BY status"))

    def latest(self, user_id: str | None, limit: int) -> list[Order]:
        """The newest `limit` orders (of one user, if given), newest first; no total counted."""
        clause, params = (" WHERE user_id = ?", [user_id]) if user_id is not None else ("", [])
        rows = self.conn.execute(f"SELECT {COLUMNS} FROM orders{clause} ORDER BY seq DESC LIMIT ?",
                                 [*params, limit]).fetchall()
        return [_order(row) for row in rows]

    def change_marks(self, user_id: str | None = None) -> tuple[int, int]:
        """The newest order's seq and the number of accepted orders, counted up to CHANGE_MARK_LIMIT
        (of one user, if given).

        A new order raises the first, a final status lowers the second, so together they tell
        that something changed, from two index lookups instead of counting every order. Past the
        limit (InventoryService away at lunchtime), the second stays put and the board's counts,
        at most a second old, tell the change instead.
        """
        accepted = "SELECT COUNT(*) FROM (SELECT 1 FROM orders WHERE {} LIMIT ?) AS waiting"
        if user_id is None:
            newest, waiting = self.conn.execute(
                f"SELECT (SELECT MAX(seq) FROM orders), ({accepted.format('status = ?')})",
                (ACCEPTED, CHANGE_MARK_LIMIT)).fetchone()
        else:
            newest, waiting = self.conn.execute(
                "SELECT (SELECT MAX(seq) FROM orders WHERE user_id = ?),"
                f" ({accepted.format('user_id = ? AND status = ?')})",
                (user_id, user_id, ACCEPTED, CHANGE_MARK_LIMIT)).fetchone()
        return newest or 0, waiting

    def status_counts_of(self, user_id: str) -> dict[str, int]:
        """How many of one user's orders are in each status."""
        return dict(self.conn.execute(
            "SELECT status, COUNT(*) FROM orders WHERE user_id = ? GROUP BY status", (user_id,)))

    def writable(self) -> bool:
        """Tell whether a write transaction can be opened right now."""
        try:
            return self.write(lambda conn: True)
        except self.dialect.errors:
            return False

    def health(self) -> tuple[bool, int | None]:
        """Whether a write transaction can be opened right now, and the outbox backlog (or None).

        A SQLite file can still be read while another writer holds it, so the backlog is read
        then too; an unreachable PostgreSQL server is not asked twice.
        """
        writable = self.writable()
        if not writable and not self.dialect.reads_while_locked:
            return False, None
        try:
            return writable, self.outbox_backlog()
        except self.dialect.errors:
            return writable, None

    def release_claims(self) -> None:
        """Free every outbox claim; call at start-up, before any relay runs.

        Only for a SQLite file, which this host's processes alone use. A PostgreSQL outbox may be
        shared with OrderService instances that are running: their claims are theirs, and those
        of a crashed instance are taken over once their lease has run out.
        """
        if self.dialect.name == "sqlite":
            outbox.release_all(self.conn)
