"""SQLite plumbing shared by every store: opening a file in WAL mode and explicit transactions."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from messaging.settings import StorageSettings


def open_db(path: str, settings: StorageSettings) -> sqlite3.Connection:
    """Open `path` in autocommit mode with WAL, the configured sync level and busy timeout."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=settings.busy_timeout_ms / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {settings.synchronous}")
    return conn


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


def is_transient(exc: BaseException) -> bool:
    """Tell whether a database error may pass on retry (locked, busy, I/O)."""
    return isinstance(exc, sqlite3.OperationalError)


class Database:
    """One SQLite file with a connection per thread (sqlite3 connections are not shared)."""

    def __init__(self, path: str, settings: StorageSettings) -> None:
        self.path, self._settings = path, settings
        self._local = threading.local()

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_db(self.path, self._settings)
        return conn

    def connect(self) -> sqlite3.Connection:
        """Open a new connection for a thread that manages its own (e.g. a relay)."""
        return open_db(self.path, self._settings)

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction on this thread's connection."""
        return transaction(self.conn)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
