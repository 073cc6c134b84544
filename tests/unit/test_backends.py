"""What both backends offer the stores alike: one migration path, single statements, the outbox."""
from __future__ import annotations

import logging

import pytest

from inventory_service.store import SCHEMA as INVENTORY_SCHEMA
from messaging.db.migrations import migrate, statements
from messaging.settings import ConfigError
from order_service.store import STEPS, OrderStore


def test_a_database_holding_another_services_store_is_refused(order_store, backend):
    with pytest.raises(ConfigError, match="holds the orders store; each service needs a database of"
                                          " its own$") as refused:
        migrate(order_store.db, "inventory", [INVENTORY_SCHEMA])
    assert str(refused.value).startswith(order_store.db.location)
    if backend == "postgres":
        assert order_store.db.location.startswith("DATABASE_URL postgresql://")
    else:
        assert order_store.db.location.endswith("orders.db")
    components = {row[0] for row in order_store.conn.execute("SELECT component FROM schema_version")}
    assert components == {"messaging", "orders"}, "nothing of the refused store was recorded"


def test_the_shared_tables_are_not_another_services_store(store_settings):
    settings = store_settings("orders.db")
    OrderStore.open(settings).close()
    store = OrderStore.open(settings)  # "messaging" and "orders" are both this store's own
    assert dict(store.conn.execute("SELECT component, version FROM schema_version")) == {
        "messaging": 4, "orders": 3}
    store.close()


def test_a_script_is_split_into_its_statements():
    script = "CREATE TABLE a (x TEXT DEFAULT ';');\n\nCREATE INDEX i ON a (x);\n;"
    assert list(statements(script)) == ["CREATE TABLE a (x TEXT DEFAULT ';');",
                                        "CREATE INDEX i ON a (x);"]


def test_write_statement_commits_one_statement_and_returns_its_rows(order_store):
    rows = order_store.db.write_statement(
        "INSERT INTO inbox (event_id, processed_at) VALUES (?, ?) RETURNING event_id", ("e-1", 1.0))
    assert [tuple(row) for row in rows] == [("e-1",)]
    assert order_store.db.write_statement("DELETE FROM deliveries") == []
    assert [row[0] for row in order_store.conn.execute("SELECT event_id FROM inbox")] == ["e-1"]


def test_closing_the_outbox_closes_only_what_belongs_to_the_relay(order_store, backend):
    """On SQLite, the calling thread's connection; on PostgreSQL nothing: the pool is the store's."""
    before = order_store.conn
    order_store.outbox_for("relay-a").close()
    if backend == "sqlite":
        assert order_store.conn is not before, "the thread's connection was closed"
    assert order_store.outbox_backlog() == 0, "the store still reads"


def test_the_read_connection_runs_a_statement_for_each_row(order_store):
    order_store.conn.executemany("INSERT INTO inbox (event_id, processed_at) VALUES (?, ?)",
                                 [("e-1", 1.0), ("e-2", 2.0)])
    order_store.conn.executemany("INSERT INTO inbox (event_id, processed_at) VALUES (?, ?)", [])
    rows = order_store.conn.execute("SELECT event_id, processed_at FROM inbox ORDER BY event_id")
    assert [tuple(row) for row in rows] == [("e-1", 1.0), ("e-2", 2.0)]


def test_a_migration_logs_the_versions_it_went_between_and_a_current_schema_is_left_alone(storage, caplog):
    caplog.set_level(logging.INFO, logger="messaging.db.migrations")
    store = OrderStore.open(storage)
    try:
        assert "schema orders migrated from version 0 to 3" in caplog.messages
        store.write(lambda conn: conn.execute("UPDATE schema_version SET applied_at = 1"))
        caplog.clear()
        migrate(store.db, "orders", STEPS)
        assert caplog.messages == [], "nothing to apply, nothing said"
        assert dict(store.conn.execute("SELECT component, applied_at FROM schema_version")) == \
            {"messaging": 1, "orders": 1}, "and nothing recorded again"
    finally:
        store.close()
