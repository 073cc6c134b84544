"""Versioned schema steps, applied the same way on either backend.

Each store lists its schema as steps (scripts of DDL); `schema_version` records, per component
(`messaging` for the outbox and inbox every store has, then one per service), how many of them a
database has had. Each step runs once per database, so a later step may ALTER a table. A SQLite
file from before versions were recorded is at version 0: its first steps (CREATE ... IF NOT
EXISTS) find their tables and change nothing.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence

from messaging.db.backend import Backend, Connection
from messaging.settings import ConfigError

logger = logging.getLogger(__name__)

SHARED_COMPONENT = "messaging"  # the outbox and inbox tables, which every service's store has
VERSIONS = ("CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY,"
            " version INTEGER NOT NULL, applied_at {applied_at})")
RECORD = ("INSERT INTO schema_version (component, version, applied_at) VALUES (?, ?, {applied_now})"
          " ON CONFLICT (component) DO UPDATE SET version = excluded.version,"
          " applied_at = excluded.applied_at")


def migrate(db: Backend, component: str, steps: Sequence[str]) -> None:
    """Bring `component`'s tables to the last of `steps` in one transaction, recording the version.

    Stores starting together queue on the database's write lock (SQLite's, and the file lock of
    the group commit) or on an advisory lock (PostgreSQL), so each step runs once.
    """
    dialect = db.dialect

    def upgrade(conn: Connection) -> int:
        if dialect.lock_writers:
            conn.execute(dialect.lock_writers, ("schema_version",))
        conn.execute(dialect.ddl(VERSIONS))
        if component != SHARED_COMPONENT:
            _refuse_another_service(conn, db.location, component)
        row = conn.execute("SELECT version FROM schema_version WHERE component = ?",
                           (component,)).fetchone()
        current: int = row[0] if row else 0
        for step in steps[current:]:
            for statement in statements(dialect.ddl(step)):
                conn.execute(statement)
        if len(steps) > current:
            conn.execute(dialect.ddl(RECORD), (component, len(steps)))
        return current

    current = db.write(upgrade)
    if len(steps) > current:
        logger.info("schema %s migrated from version %d to %d", component, current, len(steps))


def _refuse_another_service(conn: Connection, location: str, component: str) -> None:
    """Stop at start when the database already holds another service's store."""
    other = conn.execute("SELECT component FROM schema_version WHERE component NOT IN (?, ?)",
                         (SHARED_COMPONENT, component)).fetchone()
    if other is not None:
        raise ConfigError(f"{location} holds the {other[0]} store; each service needs a database"
                          f" of its own")


def statements(script: str) -> Iterator[str]:
    """The statements of a script, one by one (a SQLite script would commit the transaction)."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                yield statement.strip()
            statement = ""
