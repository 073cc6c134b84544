"""The tests of tests/unit/test_backends.py that take a backend, on PostgreSQL.

See conftest.py: this module runs their PostgreSQL runs, tests/unit their SQLite runs.
"""
from tests.unit.test_backends import *  # noqa: F403
