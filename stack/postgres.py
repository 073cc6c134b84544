"""Fresh PostgreSQL databases for tests and local stacks, created and dropped by name.

Only databases made here are dropped here: their names carry a prefix and a random suffix, and
the server may be shared with other people's databases.
"""
from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """Where to create databases: TEST_POSTGRES_URL, or the local server as user postgres."""
    return os.environ.get("TEST_POSTGRES_URL") or ADMIN_URL


def url_for(name: str, base: str | None = None) -> str:
    """The URL of database `name` on the server of `base` (the admin URL by default)."""
    parts = urlsplit(base or admin_url())
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def create_database(prefix: str = "test", encoding: str | None = None) -> str:
    """Create an empty database with a unique name (in `encoding`, if given); return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if encoding is not None:
        statement += sql.SQL(" ENCODING {} TEMPLATE template0").format(sql.Literal(encoding))
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(statement)
    return url_for(name)


def create_owned_database(prefix: str = "test") -> str:
    """Create an empty database with a login role of its own (`<database>_owner`, no superuser,
    no CREATEDB, no CREATEROLE) that owns it, and close it to every other role (CONNECT and
    TEMPORARY revoked from PUBLIC), as Compose's init script does; return its URL as that role.
    `drop_database` drops the role too."""
    url = create_database(prefix)
    name, password = database_name(url), uuid.uuid4().hex
    role = owner_of(name)
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
                     .format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name),
                                                                    sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    return as_role(url, role, password)


def owner_of(database: str) -> str:
    """The role `create_owned_database` makes for `database`."""
    return f"{database}_owner"


def as_role(url: str, role: str, password: str | None = None) -> str:
    """`url` with `role` (and `password`) as its user."""
    parts = urlsplit(url)
    credentials = role if password is None else f"{role}:{password}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{credentials}@{host}", parts.path, parts.query, ""))


def database_name(url: str) -> str:
    """The database a URL names."""
    return urlsplit(url).path.lstrip("/")


def drop_database(url: str) -> None:
    """Drop the database at `url`, closing whatever is still connected to it, and its owner role
    if `create_owned_database` made one."""
    name = database_name(url)
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner_of(name))))


def cut_connections(*urls: str) -> int:
    """Terminate every session connected to the databases at `urls`, at once; return how many."""
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
            ([database_name(url) for url in urls],)).fetchone()[0]


def allow_connections(url: str, allowed: bool) -> None:
    """Let sessions connect to the database at `url`, or refuse every new one."""
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database_name(url)), sql.Literal(allowed)))
