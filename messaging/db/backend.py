"""The seam between the stores and their database: what a store uses of a connection and a backend.

A store's SQL runs on a `Connection`: `sqlite3.Connection` on the SQLite backend, and on
PostgreSQL a psycopg connection that speaks the stores' SQL (`postgres.PgConnection`, and
`postgres._Reader` for reads outside a transaction). A `Backend` is one service's database
(`sqlite.Database`, `postgres.PostgresDatabase`), chosen by `messaging_store.open_database`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from messaging.db.dialect import Dialect

T = TypeVar("T")


class Row(Protocol):
    """A result row, read by position or by column name (`sqlite3.Row`, `postgres.Row`)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """The result of one statement: its rows, and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...  # a Row, or None past the last row

    def fetchall(self) -> list[Any]: ...  # Rows

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the stores use of a connection: statements with `?` placeholders."""

    def execute(self, statement: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]], /) -> object: ...


class Backend(Protocol):
    """What a store needs of its database."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def location(self) -> str:
        """Where the database is, as an operator names it (a path, or DATABASE_URL redacted)."""

    @property
    def conn(self) -> Connection:
        """A connection for reads (this thread's, on SQLite; pooled, on PostgreSQL)."""

    def write(self, job: Callable[[Connection], T]) -> T:
        """Run `job(conn)` in a committed write transaction and return its result (or raise)."""

    def write_statement(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement as its own committed transaction; return its rows."""

    def start_checkpoints(self) -> None: ...

    def stop_checkpoints(self) -> None: ...

    def close(self) -> None: ...
