"""The PostgreSQL schema: versioned, and created once when replicas start at the same moment."""
from __future__ import annotations

import threading

import pytest

from messaging.db.migrations import migrate
from messaging.settings import StorageSettings
from order_service.store import STEPS, OrderStore

pytestmark = pytest.mark.parametrize("backend", ["postgres"])


def versions(store: OrderStore) -> dict[str, int]:
    return dict(store.conn.execute("SELECT component, version FROM schema_version"))


def test_replicas_starting_together_create_the_schema_once(store_settings):
    settings: StorageSettings = store_settings("orders.db")
    start, stores, errors = threading.Barrier(6), [], []

    def replica() -> None:
        start.wait()
        try:
            stores.append(OrderStore.open(settings))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert versions(stores[0]) == {"messaging": 4, "orders": 3}
    for store in stores:
        store.close()


def test_a_later_step_migrates_an_existing_database_once(store_settings):
    store = OrderStore.open(store_settings("orders.db"))
    steps = [*STEPS, "ALTER TABLE orders ADD COLUMN note TEXT"]  # fails if run twice
    migrate(store.db, "orders", steps)
    migrate(store.db, "orders", steps)
    assert versions(store)["orders"] == len(STEPS) + 1
    assert store.conn.execute("SELECT note FROM orders").fetchall() == []
    store.close()
