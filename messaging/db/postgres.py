"""PostgreSQL plumbing for the stores: a connection pool, one transaction per write.

`PostgresDatabase` offers what `sqlite.Database` offers the stores (a `backend.Backend`: `conn` for
reads, `write(job)` for a committed transaction, `close`), so a store runs on either; the schema
is migrated through it like any write (`migrations.migrate`). There is no group
commit, file lock or WAL checkpointer here: the server queues writers itself, and several
replicas may share one database. `synchronous_commit` is left at the server's (safe) setting.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from messaging.db.dialect import Dialect, postgres
from messaging.settings import ConfigError

T = TypeVar("T")
logger = logging.getLogger(__name__)

POOL_MIN, POOL_MAX = 1, 16  # connections per process: request threads, relay, consumer, health
POOL_TIMEOUT = 1.0  # seconds a caller waits for a connection before it is told "unavailable"
CONNECT_TIMEOUT = 5  # seconds to open one connection


def redact(url: str) -> str:
    """The URL without its password, fit for a log line or an error message."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class Row:
    """A result row read by position or by column name, like sqlite3.Row."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values, self._index = values, index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key]] if isinstance(key, str) else self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def _rows(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


class PgConnection:
    """A psycopg connection speaking the stores' SQL (`?` placeholders, sqlite3-like calls)."""

    def __init__(self, conn: psycopg.Connection[Any], dialect: Dialect) -> None:
        self._conn, self.dialect = conn, dialect

    def execute(self, statement: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._conn.execute(self.dialect.sql(statement), params)

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:  # psycopg pipelines the statements: one round trip
            self._conn.cursor().executemany(self.dialect.sql(statement), rows)


class _Result:
    """Rows read on a pooled connection that is already back in the pool."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class _Reader:
    """`db.conn` on PostgreSQL: each statement runs on a pooled connection in autocommit."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self.dialect = db.dialect

    def execute(self, statement: str, params: Sequence[Any] = ()) -> _Result:
        with self._db.pool.connection() as conn:
            cursor = conn.execute(self.dialect.sql(statement), params)
            rows = cursor.fetchall() if cursor.description else []
            return _Result(rows, cursor.rowcount)

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._db.pool.connection() as conn:
                conn.cursor().executemany(self.dialect.sql(statement), rows)


class PostgresDatabase:
    """One service's PostgreSQL database, reached through a pool of connections."""

    def __init__(self, url: str, name: str = "store") -> None:
        self.url, self.dialect = url, postgres()
        self.location = f"DATABASE_URL {redact(url)}"
        _check_reachable(url)
        self.pool = ConnectionPool(
            url, min_size=POOL_MIN, max_size=POOL_MAX, timeout=POOL_TIMEOUT, open=True,
            name=name, kwargs={"autocommit": True, "row_factory": _rows,
                               "connect_timeout": CONNECT_TIMEOUT})
        self.conn = _Reader(self)

    def write(self, job: Callable[[PgConnection], T]) -> T:
        """Run `job(conn)` in a committed transaction and return its result (or raise)."""
        with self.pool.connection() as conn, conn.transaction():
            return job(PgConnection(conn, self.dialect))

    def write_statement(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement as its own transaction, in one round trip; return its rows.

        No BEGIN or COMMIT of ours: in autocommit the server commits the statement (durably, at
        the server's synchronous_commit) before it answers.
        """
        with self.pool.connection() as conn:
            cursor = conn.execute(self.dialect.sql(statement), params)
            return cursor.fetchall() if cursor.description else []

    def start_checkpoints(self) -> None:
        """Nothing to do: checkpoints are the server's business."""

    def stop_checkpoints(self) -> None:
        """Nothing to do: checkpoints are the server's business."""

    def close(self) -> None:
        """Close the pool and its connections."""
        self.pool.close()


def _check_reachable(url: str) -> None:
    """Connect once, so that a bad URL, a refused login, a missing database or one that is not
    UTF-8 is told at start.

    A SQL_ASCII database (what `initdb` makes without a locale) hands every text column back as
    bytes: the service would start, say it is healthy, and fail on every order.
    """
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as conn:
            encoding = conn.execute("SHOW server_encoding").fetchone()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"DATABASE_URL {redact(url)} is not usable: {reason}") from None
    found = encoding[0] if encoding else "unknown"
    if isinstance(found, bytes):  # what such a database hands back
        found = found.decode("ascii", "replace")
    if found.upper() not in ("UTF8", "UTF-8"):
        raise ConfigError(f"DATABASE_URL {redact(url)} is not usable: its encoding is {found}, and "
                          "the stores need UTF8 (CREATE DATABASE ... ENCODING 'UTF8')")
