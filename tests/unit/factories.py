"""Builders for events, bodies and deliveries shared by the unit tests (no broker involved).

Also what only the tests ask of the stores and the topology: bare SQLite connections with the
outbox and inbox tables, a transaction on such a connection, single-row shortcuts of the stores'
batch calls, and a queue's DLQ by its key.
"""
from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika

from messaging import events, topology
from messaging.amqp.delivery import Delivery
from messaging.db import inbox, outbox
from messaging.db.backend import Connection
from messaging.db.dialect import SQLITE
from messaging.db.sqlite import Database, open_db
from messaging.events import INVENTORY_RESERVED, InventoryResult, OrderPlaced
from notification_service.store import NotificationStore
from order_service.store import OrderStore

TIMESTAMP = "2026-02-11T00:00:00.000000Z"


def order_placed(**overrides: Any) -> OrderPlaced:
    """A valid OrderPlaced event with fresh ids; override any field."""
    fields = dict(event_id=str(uuid.uuid4()), order_id=str(uuid.uuid4()), timestamp=TIMESTAMP,
                  user_id="user123", item="Burger", quantity=2)
    fields.update(overrides)
    return OrderPlaced(**fields)


def inventory_result(**overrides: Any) -> InventoryResult:
    """A valid InventoryReserved event with fresh ids; override any field."""
    fields = dict(event_id=str(uuid.uuid4()), event_type=INVENTORY_RESERVED,
                  order_id=str(uuid.uuid4()), timestamp=TIMESTAMP, user_id="user123",
                  item="Burger", quantity=2)
    fields.update(overrides)
    return InventoryResult(**fields)


def payload_of(event: OrderPlaced | InventoryResult) -> dict[str, Any]:
    """The event's wire body as a dict, ready to be spoiled by a test."""
    return json.loads(events.encode(event))


def to_body(payload: Any) -> bytes:
    """Serialise any JSON value to a message body."""
    return json.dumps(payload).encode()


_tags = iter(range(1, 10**9))


def delivery(body: bytes, redelivered: bool = False) -> Delivery:
    """A hand-built delivery as the consume loop would pass it."""
    return Delivery(tag=next(_tags), exchange="orders", routing_key="order.placed",
                    redelivered=redelivered, properties=pika.BasicProperties(), body=body)


def create_outbox(conn: sqlite3.Connection) -> None:
    """Create the outbox table on a bare SQLite connection (stores use `migrations.migrate`)."""
    conn.executescript(SQLITE.ddl(outbox.SCHEMA + outbox.TRACE_SCHEMA))


def create_inbox(conn: sqlite3.Connection) -> None:
    """Create the inbox and delivery-count tables on a bare SQLite connection."""
    conn.executescript(SQLITE.ddl(inbox.SCHEMA + inbox.RETENTION_SCHEMA))


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one write transaction (BEGIN IMMEDIATE), rolling back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def connect(db: Database) -> sqlite3.Connection:
    """A connection of its own to `db`'s file, with the store's settings (the caller closes it)."""
    return open_db(db.path, db._settings)


def mark_processed(conn: Connection, event_id: str) -> bool:
    """Record `event_id` as handled; False when it already was (a duplicate)."""
    return event_id in inbox.mark_processed_many(conn, [event_id])


def finish(store: OrderStore, conn: Connection, order_id: str, status: str, reason: str | None,
           now: str) -> str:
    """Move an accepted order to its final status: 'updated', 'duplicate' or 'unknown'."""
    return store.finish_many(conn, [(order_id, status, reason)], now)[0]


def notified_orders(store: NotificationStore) -> list[str]:
    """Every order notified so far."""
    return [row[0] for row in store.conn.execute("SELECT order_id FROM notifications")]


def dead_letter_queue_for(queue: topology.Queue) -> topology.Queue:
    """The DLQ that `queue` dead-letters into."""
    return next(q for q in topology.DEAD_LETTER_QUEUES if q.name == queue.dead_letter_key)
