"""The part of a service's store that every service has: its database with outbox and inbox.

A store runs on either backend (a `backend.Backend`): `sqlite.Database` (a SQLite file, the
default) or `postgres.PostgresDatabase` (when DATABASE_URL is set). `open_database` picks one.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

from messaging.db import inbox, outbox
from messaging.db.backend import Backend, Connection
from messaging.db.migrations import migrate
from messaging.db.sqlite import Database
from messaging.settings import StorageSettings

S = TypeVar("S", bound="MessagingStore")


def open_database(storage: StorageSettings, filename: str) -> Backend:
    """The service's database: PostgreSQL at DATABASE_URL, else the SQLite file `filename`."""
    if storage.database_url:
        from messaging.db.postgres import PostgresDatabase  # psycopg only when it is asked for

        return PostgresDatabase(storage.database_url, name=filename)
    return Database(storage.path(filename), storage)


class MessagingStore:
    """A service's database with the outbox, inbox and delivery-count tables."""

    FILENAME = "messaging.db"  # each service's store names its SQLite file
    # Tables pruned past the deduplication window (messaging.db.retention).
    RETAINED: tuple[tuple[str, str, str], ...] = inbox.RETAINED
    windows: Mapping[str, float] = MappingProxyType({})  # tables kept for a window of their own

    def __init__(self, db: Backend) -> None:
        self.db, self.dialect = db, db.dialect
        self.write = db.write  # the hot path: no extra call in between
        migrate(db, "messaging", [outbox.SCHEMA, inbox.SCHEMA, inbox.RETENTION_SCHEMA,
                                  outbox.TRACE_SCHEMA])

    @classmethod
    def open(cls: type[S], storage: StorageSettings) -> S:
        """The store on the backend `storage` names (DATABASE_URL, or DATA_DIR/FILENAME)."""
        return cls(open_database(storage, cls.FILENAME))

    @property
    def conn(self) -> Connection:
        """A connection for reads (this thread's, on SQLite; pooled, on PostgreSQL)."""
        return self.db.conn

    def is_transient(self, exc: BaseException) -> bool:
        """Tell whether an error of this store may pass on retry."""
        return self.dialect.is_transient(exc)

    def start_checkpoints(self) -> None:
        """Start the SQLite WAL checkpointer (nothing on PostgreSQL)."""
        self.db.start_checkpoints()

    def stop_checkpoints(self) -> None:
        self.db.stop_checkpoints()

    def close(self) -> None:
        """Close this thread's SQLite connection, or the PostgreSQL pool."""
        self.db.close()

    def outbox_for(self, owner: str) -> outbox.Outbox:
        """The outbox as the relay named `owner` sees it."""
        return outbox.Outbox(self.db, owner)

    def outbox_backlog(self) -> int:
        """Messages still in the outbox (see `outbox.backlog`)."""
        return outbox.backlog(self.conn)

    def outbox_pending(self) -> tuple[int, float | None]:
        """Messages in the outbox, and when the oldest was committed (see `outbox.pending`)."""
        return outbox.pending(self.conn)

    def count_redelivery(self, key: str) -> int:
        """Count a redelivery of the message `key` durably and return its delivery count."""
        return self.write(lambda conn: inbox.count_delivery(conn, key))
