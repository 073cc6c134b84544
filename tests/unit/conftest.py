"""Fixtures for broker-free unit tests: temporary stores on SQLite and on PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inventory_service.store import InventoryStore
from messaging.settings import StorageSettings
from notification_service.store import NotificationStore
from order_service.store import OrderStore
from stack import postgres

BACKENDS = ("sqlite", "postgres")


@pytest.fixture
def storage(tmp_path: Path) -> StorageSettings:
    """Storage settings pointing at this test's temporary directory (SQLite)."""
    return StorageSettings(data_dir=str(tmp_path))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: the test runs once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture
def store_settings(backend: str, storage: StorageSettings) -> Iterator[Callable[[str], StorageSettings]]:
    """Storage settings for a service's store on `backend`, by its SQLite file name.

    On SQLite every store is a file in the test's directory; on PostgreSQL each gets a fresh
    database of its own (the same one when asked again), dropped after the test.
    """
    urls: dict[str, str] = {}

    def settings_for(filename: str) -> StorageSettings:
        if backend == "sqlite":
            return storage
        if filename not in urls:
            urls[filename] = postgres.create_database("unit")
        return StorageSettings(data_dir=storage.data_dir, database_url=urls[filename])

    yield settings_for
    for url in urls.values():
        postgres.drop_database(url)


@pytest.fixture
def inventory_store(store_settings: Callable[[str], StorageSettings]) -> Iterator[InventoryStore]:
    """An InventoryStore seeded with Burger=10 and Pizza=5."""
    store = InventoryStore.open(store_settings("inventory.db"))
    store.seed(("Burger",), 10)
    store.seed(("Pizza",), 5)
    yield store
    store.close()


@pytest.fixture
def notification_store(store_settings: Callable[[str], StorageSettings]) -> Iterator[NotificationStore]:
    """An empty NotificationStore."""
    store = NotificationStore.open(store_settings("notifications.db"))
    yield store
    store.close()


@pytest.fixture
def order_store(store_settings: Callable[[str], StorageSettings]) -> Iterator[OrderStore]:
    """An empty OrderStore."""
    store = OrderStore.open(store_settings("orders.db"))
    yield store
    store.close()
