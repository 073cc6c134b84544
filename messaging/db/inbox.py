"""The inbox (events already handled) and the redelivery counts: a consumer's durable memory.

An event id is recorded in the same transaction as the effects of handling it, so a redelivered
event is recognised as a duplicate however often it comes within the deduplication window
(DEDUP_RETENTION): older rows of both tables are pruned (see `messaging.db.retention`).
"""
from __future__ import annotations

import time

from messaging.db.backend import Connection
from messaging.db.sqlite import chunks

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id TEXT PRIMARY KEY,
    processed_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    message_key TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL
);
"""

# Step 2 of the shared schema: what pruning reads. Rows counted before it get the migration's time.
RETENTION_SCHEMA = """
ALTER TABLE deliveries ADD COLUMN last_seen {real};
UPDATE deliveries SET last_seen = {now} WHERE last_seen IS NULL;
CREATE INDEX IF NOT EXISTS inbox_by_processed_at ON inbox (processed_at);
CREATE INDEX IF NOT EXISTS deliveries_by_last_seen ON deliveries (last_seen);
"""

# What each table's rows are pruned by: (table, key, time column).
RETAINED = (("inbox", "event_id", "processed_at"), ("deliveries", "message_key", "last_seen"))


def mark_processed_many(conn: Connection, event_ids: list[str]) -> set[str]:
    """Record several event ids as handled in one statement; return those not seen before."""
    now = time.time()
    fresh: set[str] = set()
    for chunk in chunks(event_ids):
        fresh.update(row[0] for row in conn.execute(
            "INSERT INTO inbox (event_id, processed_at) VALUES "
            + ", ".join(["(?, ?)"] * len(chunk)) + " ON CONFLICT DO NOTHING RETURNING event_id",
            [value for event_id in chunk for value in (event_id, now)]))
    return fresh


def count_delivery(conn: Connection, message_key: str) -> int:
    """Count one more delivery of a redelivered message and return the total so far."""
    conn.execute(
        "INSERT INTO deliveries (message_key, attempts, last_seen) VALUES (?, 2, ?)"
        " ON CONFLICT(message_key) DO UPDATE SET attempts = deliveries.attempts + 1,"
        " last_seen = excluded.last_seen",
        (message_key, time.time()),
    )
    return conn.execute("SELECT attempts FROM deliveries WHERE message_key = ?",
                        (message_key,)).fetchone()[0]
