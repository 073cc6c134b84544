"""Fixtures for broker-free unit tests: temporary SQLite stores."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory_service.store import InventoryStore
from messaging.settings import StorageSettings
from notification_service.store import NotificationStore
from order_service.store import OrderStore


@pytest.fixture
def storage(tmp_path: Path) -> StorageSettings:
    """Storage settings pointing at this test's temporary directory."""
    return StorageSettings(data_dir=str(tmp_path))


@pytest.fixture
def inventory_store(storage: StorageSettings) -> Iterator[InventoryStore]:
    """An InventoryStore seeded with Burger=10 and Pizza=5."""
    store = InventoryStore(storage.path("inventory.db"), storage)
    store.seed(("Burger",), 10)
    store.seed(("Pizza",), 5)
    yield store
    store.close()


@pytest.fixture
def notification_store(storage: StorageSettings) -> Iterator[NotificationStore]:
    """An empty NotificationStore."""
    store = NotificationStore(storage.path("notifications.db"), storage)
    yield store
    store.close()


@pytest.fixture
def order_store(storage: StorageSettings) -> Iterator[OrderStore]:
    """An empty OrderStore."""
    store = OrderStore(storage.path("orders.db"), storage)
    yield store
    store.close()
