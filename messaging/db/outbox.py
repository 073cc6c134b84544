"""The outbox: events committed with the change that caused them, waiting to be published.

Its SQL lives here, and so does `Outbox`, the storage side of the relay (`relay.py`): claiming
rows for one relay, giving them back, deleting the confirmed ones, on either backend.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from messaging.db import dialect
from messaging.db.backend import Backend, Connection
from messaging.db.sqlite import chunks
from messaging.events import Message

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id {id},
    message_id TEXT NOT NULL UNIQUE,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body {blob} NOT NULL,
    correlation_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at {real} NOT NULL,
    claimed_by TEXT,
    claimed_until {real}
);
"""
# Version 4 of the shared schema: the W3C trace context each message is published with.
TRACE_SCHEMA = """
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
"""


@dataclass(frozen=True)
class PendingMessage:
    """An outbox row claimed for publishing."""

    id: int
    created_at: float
    message: Message


CLAIM_LEASE = 10.0  # seconds a claimed row is left to its relay before another may take it
RENEW_EVERY = CLAIM_LEASE / 4  # a connected relay renews its claims this often (see `renew`)


INSERT = ("INSERT INTO outbox (message_id, exchange, routing_key, body, correlation_id, type,"
          " created_at, claimed_by, claimed_until, traceparent) VALUES {rows}"
          " ON CONFLICT DO NOTHING RETURNING id, message_id")
ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _values(messages: list[Message], now: float, claimant: str | None) -> list[Any]:
    until = now + CLAIM_LEASE if claimant else None
    return [value for m in messages for value in (m.message_id, m.exchange, m.routing_key, m.body,
                                                  m.correlation_id, m.type, now, claimant, until,
                                                  m.traceparent)]


def add_many(conn: Connection, messages: list[Message],
             claimant: str | None = None) -> list[PendingMessage]:
    """Queue several messages in one statement; return the rows that were new, in order."""
    now = time.time()
    by_id = {m.message_id: m for m in messages}
    rows: list[Any] = []
    for chunk in chunks(messages):
        rows += conn.execute(INSERT.format(rows=", ".join([ROW] * len(chunk))),
                             _values(chunk, now, claimant)).fetchall()
    return sorted((PendingMessage(row[0], now, by_id[row[1]]) for row in rows), key=lambda r: r.id)


def add_with(db: Backend, change: str, params: Sequence[Any], message: Message,
             claimant: str | None = None) -> PendingMessage | None:
    """Run `change` (one INSERT) and queue `message` in one transaction; return the outbox row.

    On PostgreSQL both go in one statement (the change as a data-modifying CTE), committed in one
    round trip; on SQLite, as two statements in one group-committed transaction. Returns None
    when a row with this message_id already exists (the change is made all the same).
    """
    now = time.time()
    insert, values = INSERT.format(rows=ROW), _values([message], now, claimant)
    if db.dialect.modifying_cte:
        rows = db.write_statement(f"WITH change AS ({change}) {insert}", [*params, *values])
    else:
        def both(conn: Connection) -> list[Any]:
            conn.execute(change, params)
            return conn.execute(insert, values).fetchall()

        rows = db.write(both)
    return PendingMessage(rows[0][0], now, message) if rows else None


def claim(conn: Connection, owner: str, limit: int, lease: float) -> list[PendingMessage]:
    """Claim up to `limit` unclaimed (or lease-expired) rows for `owner`, oldest first.

    On PostgreSQL, rows another relay is claiming at this moment are skipped, not waited for.
    """
    now = time.time()
    rows = conn.execute(
        "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN ("
        " SELECT id FROM outbox WHERE claimed_until IS NULL OR claimed_until < ?"
        f" ORDER BY id LIMIT ?{dialect.of(conn).skip_locked})"
        " RETURNING id, message_id, exchange, routing_key, body, correlation_id, type, created_at,"
        " traceparent",
        (owner, now + lease, now, limit),
    ).fetchall()
    rows.sort(key=lambda row: row["id"])
    return [
        PendingMessage(row["id"], row["created_at"], Message(
            row["exchange"], row["routing_key"], bytes(row["body"]), row["message_id"],
            row["correlation_id"], row["type"], row["traceparent"]))
        for row in rows
    ]


def delete(conn: Connection, ids: list[int]) -> None:
    """Remove rows whose publication the broker confirmed."""
    conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])


def renew(conn: Connection, owner: str, lease: float) -> int:
    """Extend every claim `owner` holds to `lease` seconds from now; return how many.

    A relay that is alive keeps its rows this way, so the lease can be short: the rows of a relay
    that died are free to others within one lease of its last renewal.
    """
    return conn.execute("UPDATE outbox SET claimed_until = ? WHERE claimed_by = ?",
                        (time.time() + lease, owner)).rowcount


def release(conn: Connection, ids: list[int], delay: float = 0.0) -> None:
    """Give rows back so they are published again after `delay` seconds."""
    until = time.time() + delay if delay else None
    conn.executemany("UPDATE outbox SET claimed_by = NULL, claimed_until = ? WHERE id = ?",
                     [(until, i) for i in ids])


def release_all(conn: Connection, owner: str | None = None) -> None:
    """Release the claims of `owner` (or of everybody, at start-up before any relay runs)."""
    if owner is None:
        conn.execute("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL")
    else:
        conn.execute("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?",
                     (owner,))


def backlog(conn: Connection) -> int:
    """Count messages still in the outbox (unconfirmed, or confirmed and about to be deleted)."""
    return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


def pending(conn: Connection) -> tuple[int, float | None]:
    """Count the messages in the outbox, and when the oldest was committed (None when empty)."""
    row = conn.execute("SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
    return row[0], row[1]


class OutboxUnavailable(Exception):
    """The outbox could not be read or written just now; the rows are safe, try again later."""


class Outbox:
    """The relay's view of one outbox: claim, give back and delete rows for `owner`.

    Every call is its own committed write (on SQLite through the database's group commit, on
    PostgreSQL a transaction on a pooled connection) and raises OutboxUnavailable instead of the
    backend's own error, so the relay knows no SQL dialect. A PostgreSQL outbox may be shared by
    several services' relays: a claim skips the rows another relay is claiming (FOR UPDATE SKIP
    LOCKED), so a row is published by one relay at a time; the rows of a relay that died are
    claimed by another once their lease has run out.
    """

    def __init__(self, db: Backend, owner: str, lease: float = CLAIM_LEASE) -> None:
        self._db, self.owner, self._lease = db, owner, lease

    def claim(self, limit: int) -> list[PendingMessage]:
        """Claim up to `limit` free rows, oldest first."""
        return self._write(lambda conn: claim(conn, self.owner, limit, self._lease))

    def release(self, ids: list[int], delay: float) -> None:
        """Give rows back, to be claimed again after `delay` seconds."""
        self._write(lambda conn: release(conn, ids, delay))

    def release_mine(self) -> None:
        """Give back every row claimed by this owner (the ones never published, or unconfirmed)."""
        self._write(lambda conn: release_all(conn, self.owner))

    def renew(self) -> int:
        """Extend this owner's claims by a lease; return how many rows it holds."""
        return self._write(lambda conn: renew(conn, self.owner, self._lease))

    def delete(self, ids: list[int]) -> None:
        """Remove rows whose publication the broker confirmed."""
        self._write(lambda conn: delete(conn, ids))

    def close(self) -> None:
        """Close the calling thread's connection (a PostgreSQL pool belongs to the store)."""
        if self._db.dialect.thread_connections:
            self._db.close()

    def _write(self, job: Callable[[Connection], T]) -> T:
        try:
            return self._db.write(job)
        except self._db.dialect.errors as exc:
            raise OutboxUnavailable(str(exc)) from exc
