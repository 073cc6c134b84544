"""The services on PostgreSQL: the whole flow, a bad DATABASE_URL, and a database that goes away.

These run on PostgreSQL whatever TEST_BACKEND says (each service gets a fresh database).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import requests

from messaging.settings import StorageSettings
from notification_service.store import NotificationStore
from order_service.store import OrderStore
from stack import postgres
from stack.processes import MODULES, ROOT, Stack, free_port
from tests.client import all_final, post_order, post_orders, wait_for


def audit(stack: Stack) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.audit", *stack.audit_args()],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_whole_flow_runs_on_postgres_and_the_audit_reads_it(make_stack):
    stack = make_stack("postgres").start()
    order_ids = post_orders(stack.order_url, 60)
    wait_for(lambda: all_final(stack.order_url, order_ids), what="every order to be final")
    wait_for(lambda: stack["notification"].health()[1]["notifications_sent"] == 60,
             what="every reservation to be notified")
    # Confirmed rows leave the outboxes together, within relay.DELETE_DELAY of their confirm.
    wait_for(lambda: all(stack[name].health()[1]["outbox_backlog"] == 0 for name in ("order", "inventory")),
             timeout=5, what="the confirmed rows to leave both outboxes")
    result = audit(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[OK] every accepted order has exactly one final status: 60 orders: 60 reserved" \
        in result.stdout
    assert not [path for name in MODULES for path in stack[name].data_dir.glob("*.db")], \
        "a SQLite file was made"


@pytest.fixture
def missing_database() -> str:
    return postgres.url_for(f"missing_{os.getpid()}_{id(object())}")


@pytest.fixture
def sql_ascii_database() -> Iterator[str]:
    """A database in SQL_ASCII, as `initdb` without a locale makes them."""
    url = postgres.create_database("ascii", encoding="SQL_ASCII")
    yield url
    postgres.drop_database(url)


@pytest.fixture
def another_services_database(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """Factory: a database holding the store of a service other than `module`'s."""
    urls: list[str] = []

    def make(module: str) -> str:
        url = postgres.create_database("other")
        urls.append(url)
        other = NotificationStore if module != "notification_service" else OrderStore
        other.open(StorageSettings(database_url=url)).close()
        return url

    yield make
    for url in urls:
        postgres.drop_database(url)


@pytest.mark.parametrize("module", sorted(MODULES.values()))
@pytest.mark.parametrize("case", ["missing database", "refused login", "not postgresql",
                                  "another service's database", "not UTF-8"])
def test_an_unusable_database_url_stops_the_service_with_one_line(module, case, missing_database,
                                                                  another_services_database,
                                                                  sql_ascii_database):
    if case == "another service's database":
        url = another_services_database(module)
    elif case == "not UTF-8":
        url = sql_ascii_database
    else:
        url = {"missing database": missing_database,
               "refused login": postgres.url_for("postgres").replace("postgres@", "no_such_role@"),
               "not postgresql": "mysql://user:secret@127.0.0.1/orders"}[case]
    env = {**os.environ, "DATABASE_URL": url, "RABBITMQ_HOST": "127.0.0.1",
           "PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "configuration error: DATABASE_URL" in lines[0]
    assert "secret" not in lines[0]
    if case == "not UTF-8":  # it would hand every text column back as bytes, and fail every order
        assert lines[0].endswith("its encoding is SQL_ASCII, and the stores need UTF8 "
                                 "(CREATE DATABASE ... ENCODING 'UTF8')"), lines[0]


def test_order_service_answers_503_while_its_database_is_gone_and_recovers(make_stack):
    stack = make_stack("postgres").start()
    order = stack["order"]
    first = post_order(stack.order_url)["order_id"]
    postgres.allow_connections(order.database_url, False)
    try:
        postgres.cut_connections(order.database_url)

        def refused() -> list[requests.Response]:  # a Response is falsy when its status is 503
            response = requests.post(f"{stack.order_url}/order", timeout=10,
                                     json={"user_id": "u1", "item": "Burger", "quantity": 1})
            return [response] if response.status_code == 503 else []

        [response] = wait_for(refused, what="POST /order to answer 503")
        assert response.headers["Retry-After"] == "1"
        assert response.json()["status"] == 503
        health = wait_for(lambda: (h := order.health()) and h[0] == 503 and h,
                          what="/health to say 503")
        assert health[1]["database"] == "unavailable"
    finally:
        postgres.allow_connections(order.database_url, True)
    wait_for(lambda: order.health() and order.health()[0] == 200, what="/health back to 200")
    second = post_order(stack.order_url)["order_id"]
    wait_for(lambda: all_final(stack.order_url, [first, second]),
             what="orders before and after the outage to be final")
    assert order.running
