"""The tests of tests/unit/test_retention.py that take a backend, on PostgreSQL.

See conftest.py: this module runs their PostgreSQL runs, tests/unit their SQLite runs.
"""
from tests.unit.test_retention import *  # noqa: F403
