"""The stores' unit tests again, on PostgreSQL: the same test functions, with backend=postgres.

Each module here star-imports a module of tests/unit whose tests take a `backend`; this conftest
gives them the unit fixtures and keeps only their PostgreSQL runs (tests/unit keeps the SQLite
ones, and refuses to run when a module with PostgreSQL runs has no twin here). The two modules
that test PostgreSQL alone live here outright.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import (  # noqa: F401 - fixtures for the imported tests
    backend,
    backend_of,
    inventory_store,
    notification_store,
    order_store,
    storage,
    store_settings,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop what tests/unit already runs: the SQLite runs and the tests that take no backend."""
    elsewhere = [item for item in items if HERE in item.path.parents and backend_of(item) != "postgres"]
    if not elsewhere:
        return
    dropped = set(map(id, elsewhere))
    items[:] = [item for item in items if id(item) not in dropped]
    config.hook.pytest_deselected(items=elsewhere)
