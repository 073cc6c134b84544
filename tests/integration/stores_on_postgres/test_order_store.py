"""The tests of tests/unit/test_order_store.py that take a backend, on PostgreSQL.

See conftest.py: this module runs their PostgreSQL runs, tests/unit their SQLite runs.
"""
from tests.unit.test_order_store import *  # noqa: F403
