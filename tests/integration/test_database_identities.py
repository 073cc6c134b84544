"""Database identities: each service connects to its own database as a role of its own, which is
no superuser, may create no database or role, and cannot connect to another service's database.

These run on PostgreSQL whatever TEST_BACKEND says; the roles and databases are dropped after.
"""
from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import pytest

from stack import postgres
from stack.processes import MODULES, Stack
from tests.client import get_order, post_order, wait_for


def test_each_services_role_reaches_its_own_database_only(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("postgres").start()
    order = post_order(stack.order_url)["order_id"]  # the migrations and the flow, as the roles
    wait_for(lambda: get_order(stack.order_url, order)["status"] == "reserved", what="the order")
    urls = {name: stack[name].database_url for name in MODULES}
    for name, url in urls.items():
        with psycopg.connect(url) as conn:
            role, superuser, createdb, createrole = conn.execute(
                "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
                " WHERE rolname = current_user").fetchone()
            assert role == urlsplit(url).username != "postgres"
            assert (superuser, createdb, createrole) == (False, False, False), name
        for other, other_url in urls.items():
            if other == name:
                continue
            elsewhere = urlsplit(url)._replace(path=urlsplit(other_url).path).geturl()
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(elsewhere).close()


def test_the_roles_are_dropped_with_their_databases() -> None:
    url = postgres.create_owned_database("gone")
    role = urlsplit(url).username
    postgres.drop_database(url)
    with psycopg.connect(postgres.admin_url()) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0] == 0
