"""NotificationService storage: one row per notified order, the durable dedup record.

The record is kept for the deduplication window (DEDUP_RETENTION) and then pruned like the inbox:
a duplicate InventoryReserved older than the window is not recognised (docs/guarantees.md).
"""
from __future__ import annotations

import time

from messaging.db.backend import Backend, Connection
from messaging.db.messaging_store import MessagingStore
from messaging.db.migrations import migrate
from messaging.events import InventoryResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    order_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity {int} NOT NULL,
    message TEXT NOT NULL,
    sent_at {real} NOT NULL
);
"""

RETENTION_SCHEMA = """
CREATE INDEX IF NOT EXISTS notifications_by_sent_at ON notifications (sent_at);
"""


class NotificationStore(MessagingStore):
    """Remembers every notification sent."""

    FILENAME = "notifications.db"
    RETAINED = MessagingStore.RETAINED + (("notifications", "order_id", "sent_at"),)

    def __init__(self, db: Backend) -> None:
        super().__init__(db)
        migrate(db, "notifications", [SCHEMA, RETENTION_SCHEMA])

    def record(self, conn: Connection, result: InventoryResult, message: str) -> bool:
        """Record a notification for the order; False when it was already notified."""
        cursor = conn.execute(
            "INSERT INTO notifications (order_id, event_id, user_id, item, quantity,"
            " message, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (result.order_id, result.event_id, result.user_id, result.item, result.quantity,
             message, time.time()))
        return cursor.rowcount == 1

    def result_events(self) -> dict[str, str]:
        """order_id -> event_id of the InventoryReserved event each notification was sent for."""
        return dict(self.conn.execute("SELECT order_id, event_id FROM notifications").fetchall())

    def count(self) -> int:
        """How many notifications were sent."""
        return self.conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
