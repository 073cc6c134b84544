"""Fixtures for server-free unit tests: temporary stores on SQLite.

The store fixtures take a `backend` (each test is generated for SQLite and for PostgreSQL), but
tests/unit keeps only the SQLite runs: the PostgreSQL runs of the same test functions are
collected in tests/integration/stores_on_postgres/, which imports these fixtures, so that
`pytest tests/unit` (and mutmut, which runs it) needs no database server and no broker.
"""
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
UNIT = Path(__file__).resolve().parent
ON_POSTGRES = UNIT.parent / "integration" / "stores_on_postgres"


def backend_of(item: pytest.Item) -> str | None:
    """The backend a collected test runs its stores on, or None when it takes no `backend`."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("backend") if callspec else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the PostgreSQL runs of unit tests to tests/integration/stores_on_postgres/."""
    on_postgres = [item for item in items
                   if UNIT in item.path.parents and backend_of(item) == "postgres"]
    if not on_postgres:
        return
    twins = {path.name for path in ON_POSTGRES.glob("test_*.py")}
    missing = sorted({item.path.name for item in on_postgres} - twins)
    if missing:
        raise pytest.UsageError(
            f"{', '.join(missing)}: tests on backend=postgres with no module in {ON_POSTGRES} "
            f"that runs them (add one that star-imports the unit module)")
    dropped = set(map(id, on_postgres))
    items[:] = [item for item in items if id(item) not in dropped]
    config.hook.pytest_deselected(items=on_postgres)


@pytest.fixture
def storage(tmp_path: Path) -> StorageSettings:
    """Storage settings pointing at this test's temporary directory (SQLite)."""
    return StorageSettings(data_dir=str(tmp_path))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: SQLite here, PostgreSQL in tests/integration/stores_on_postgres/."""
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
