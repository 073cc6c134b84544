"""The part of a service's store that every service has: its SQLite file with outbox and inbox."""
from __future__ import annotations

from messaging import inbox, outbox
from messaging.settings import StorageSettings
from messaging.storage import Database


class MessagingStore(Database):
    """A service's SQLite file with the outbox, inbox and delivery-count tables."""

    def __init__(self, path: str, settings: StorageSettings) -> None:
        super().__init__(path, settings)
        outbox.create_schema(self.conn)
        inbox.create_schema(self.conn)

    def outbox_for(self, owner: str) -> outbox.SqliteOutbox:
        """The outbox as the relay named `owner` sees it."""
        return outbox.SqliteOutbox(self, owner)

    def outbox_backlog(self) -> int:
        """Messages still in the outbox (see `outbox.backlog`)."""
        return outbox.backlog(self.conn)

    def count_redelivery(self, key: str) -> int:
        """Count a redelivery of the message `key` durably and return its delivery count."""
        return self.write(lambda conn: inbox.count_delivery(conn, key))
