"""Pruning the deduplication records past DEDUP_RETENTION, on both backends (no broker)."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest

from inventory_service.unit_of_work import InventoryUnitOfWork
from messaging.db import inbox, outbox, retention
from messaging.db.messaging_store import MessagingStore, open_database
from messaging.db.migrations import migrate
from messaging.settings import RetentionSettings
from notification_service.store import NotificationStore
from notification_service.unit_of_work import NotificationUnitOfWork
from order_service.store import STEPS, OrderStore
from tests.unit.factories import (
    delivery,
    inventory_result,
    mark_processed,
    order_placed,
    payload_of,
    to_body,
)

DAY = 86400.0
WEEK = RetentionSettings(window=7 * DAY)


def pruner(store, days_later: float = 0.0, batch: int = retention.BATCH) -> retention.Pruner:
    """A pruner whose clock runs `days_later` days ahead of the real one."""
    return retention.Pruner(store, WEEK, batch, clock=lambda: time.time() + days_later * DAY)


def add_rows(store: MessagingStore, table: str, count: int, at: float, prefix: str = "") -> None:
    """Insert `count` inbox, deliveries or notifications rows stamped `at`."""
    rows = {
        "inbox": ("INSERT INTO inbox (event_id, processed_at) VALUES (?, ?)",
                  lambda key: (key, at)),
        "deliveries": ("INSERT INTO deliveries (message_key, attempts, last_seen) VALUES (?, 2, ?)",
                       lambda key: (key, at)),
        "notifications": ("INSERT INTO notifications (order_id, event_id, user_id, item, quantity,"
                          " message, sent_at) VALUES (?, 'e', 'u', 'Burger', 1, 'm', ?)",
                          lambda key: (key, at)),
    }
    statement, values = rows[table]
    store.write(lambda conn: conn.executemany(
        statement, [values(f"{prefix}{table}-{i}") for i in range(count)]))


def keys(store: MessagingStore, table: str) -> set[str]:
    key = {"inbox": "event_id", "deliveries": "message_key", "notifications": "order_id"}[table]
    return {row[0] for row in store.conn.execute(f"SELECT {key} FROM {table}")}


def test_rows_older_than_the_window_are_deleted_and_younger_ones_kept(notification_store):
    now = time.time()
    for table in ("inbox", "deliveries", "notifications"):
        add_rows(notification_store, table, 3, now - 8 * DAY, prefix="old-")
        add_rows(notification_store, table, 2, now - 6 * DAY, prefix="young-")
    p = pruner(notification_store)
    p.prune_once()
    for table in ("inbox", "deliveries", "notifications"):
        assert keys(notification_store, table) == {f"young-{table}-0", f"young-{table}-1"}, table
    assert p.pruned == {"inbox": 3, "deliveries": 3, "notifications": 3}


def test_a_counted_redelivery_is_stamped_and_kept_inside_the_window(notification_store):
    notification_store.count_redelivery("id:a")
    pruner(notification_store, days_later=6).prune_once()
    assert notification_store.count_redelivery("id:a") == 3
    pruner(notification_store, days_later=8).prune_once()
    assert keys(notification_store, "deliveries") == set()


def test_reservations_and_orders_are_business_records_and_never_pruned(inventory_store,
                                                                        order_store):
    unit_of_work = InventoryUnitOfWork(inventory_store, 1.0, SimpleNamespace(
        claimant=lambda: "test-relay", hand_over=lambda rows: None))
    event = order_placed()
    unit_of_work.handle_batch([delivery(to_body(payload_of(event)))])
    order_store.write(lambda conn: conn.execute(
        "INSERT INTO orders (order_id, user_id, item, quantity, status, created_at, updated_at)"
        " VALUES ('o1', 'u', 'Burger', 1, 'reserved', '2020-01-01T00:00:00Z',"
        " '2020-01-01T00:00:00Z')"))
    pruner(inventory_store, days_later=30).prune_once()
    pruner(order_store, days_later=30).prune_once()
    assert set(inventory_store.outcomes()) == {event.order_id}
    assert keys(inventory_store, "inbox") == set()
    assert set(order_store.statuses()) == {"o1"}


def test_a_duplicate_inside_the_window_is_recognised_and_one_outside_it_is_not(notification_store):
    """The documented trade-off: past the window, a re-published result notifies again."""
    unit_of_work = NotificationUnitOfWork(notification_store)
    body = to_body(payload_of(inventory_result()))
    unit_of_work.handle_batch([delivery(body)])
    pruner(notification_store, days_later=6).prune_once()
    unit_of_work.handle_batch([delivery(body, redelivered=True)])
    assert (notification_store.count(), unit_of_work.duplicates) == (1, 1)
    pruner(notification_store, days_later=8).prune_once()
    assert notification_store.count() == 0
    unit_of_work.handle_batch([delivery(body, redelivered=True)])
    assert (notification_store.count(), unit_of_work.duplicates) == (1, 1)  # notified a second time


def test_an_inbox_entry_is_a_duplicate_only_inside_the_window(inventory_store):
    inventory_store.write(lambda conn: mark_processed(conn, "event-1"))
    pruner(inventory_store, days_later=6).prune_once()
    assert inventory_store.write(lambda conn: mark_processed(conn, "event-1")) is False
    pruner(inventory_store, days_later=8).prune_once()
    assert inventory_store.write(lambda conn: mark_processed(conn, "event-1")) is True


def test_an_order_decided_before_the_window_is_still_decided_once(inventory_store):
    """InventoryService's reservations, which are kept, still catch a very late duplicate."""
    unit_of_work = InventoryUnitOfWork(inventory_store, 1.0, SimpleNamespace(
        claimant=lambda: "test-relay", hand_over=lambda rows: None))
    body = to_body(payload_of(order_placed()))
    unit_of_work.handle_batch([delivery(body)])
    pruner(inventory_store, days_later=8).prune_once()
    unit_of_work.handle_batch([delivery(body, redelivered=True)])
    assert unit_of_work.duplicates == 1
    assert outbox.backlog(inventory_store.conn) == 1


def test_pruning_deletes_in_batches_and_lets_a_concurrent_write_through(notification_store):
    add_rows(notification_store, "inbox", 2050, time.time() - 8 * DAY)
    deleted: list[int] = []
    write = notification_store.write

    def recording(job):
        result = write(job)
        if isinstance(result, int):  # a prune batch: its rows deleted
            deleted.append(result)
        return result

    notification_store.write = recording
    done, writing = threading.Event(), threading.Event()
    latencies: list[tuple[float, bool]] = []

    def writer() -> None:
        i = 0
        while not done.is_set():
            started = time.monotonic()
            write(lambda conn, i=i: mark_processed(conn, f"fresh-{i}"))
            latencies.append((time.monotonic() - started, done.is_set()))
            writing.set()
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(timeout=10)
    try:
        retention.prune(notification_store, time.time(), 7 * DAY, batch=100)
    finally:
        done.set()
        thread.join(timeout=10)
    inbox_batches = deleted[:deleted.index(50) + 1]
    assert inbox_batches == [100] * 20 + [50]  # one short transaction per 100 rows
    assert keys(notification_store, "inbox") == {f"fresh-{i}" for i in range(len(latencies))}
    during = [seconds for seconds, after in latencies if not after]
    assert during, "no write completed while the pruning ran"
    assert max(during) < 2.0, max(during)


def wait_pruned(p: retention.Pruner, rows: int) -> int:
    deadline = time.monotonic() + 10
    while p.pruned["inbox"] < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    return p.pruned["inbox"]


def test_the_pruner_prunes_at_start(notification_store):
    add_rows(notification_store, "inbox", 1, time.time() - 8 * DAY)
    p = retention.Pruner(notification_store, RetentionSettings(window=7 * DAY, prune_interval=3600))
    p.start()
    try:
        assert wait_pruned(p, 1) == 1
    finally:
        p.stop()
    assert not p.is_alive()  # stopping does not wait out the interval


def test_the_pruner_prunes_again_every_interval(notification_store):
    p = retention.Pruner(notification_store, RetentionSettings(window=7 * DAY, prune_interval=0.05))
    p.start()
    try:
        add_rows(notification_store, "inbox", 2, time.time() - 8 * DAY)
        assert wait_pruned(p, 2) == 2
    finally:
        p.stop()


def test_a_database_error_waits_for_the_next_round(notification_store, caplog):
    add_rows(notification_store, "inbox", 1, time.time() - 8 * DAY)

    def unavailable(job):
        raise notification_store.dialect.transient[0]("database is locked")

    write, notification_store.write = notification_store.write, unavailable
    p = pruner(notification_store)
    p.prune_once()
    assert "pruning the deduplication records failed" in caplog.text
    assert p.pruned["inbox"] == 0
    notification_store.write = write
    p.prune_once()
    assert p.pruned["inbox"] == 1


def test_a_store_from_before_pruning_is_migrated_once(store_settings):
    """The delivery counts get a last-seen time (the migration's), on either backend."""
    settings = store_settings("notifications.db")
    db = open_database(settings, NotificationStore.FILENAME)
    old_steps = [outbox.SCHEMA, inbox.SCHEMA]
    if db.dialect.name == "sqlite":  # files were not versioned before: run the steps bare
        for step in old_steps:
            db.conn.executescript(db.dialect.ddl(step))
    else:
        migrate(db, "messaging", old_steps)
    db.write(lambda conn: conn.execute(
        "INSERT INTO deliveries (message_key, attempts) VALUES ('id:old', 4)"))
    db.close()
    before = time.time()
    for _ in range(2):  # the second start finds the column and changes nothing
        store = NotificationStore.open(settings)
        row = store.conn.execute(
            "SELECT attempts, last_seen FROM deliveries WHERE message_key = 'id:old'").fetchone()
        assert row[0] == 4 and before - 1 <= row[1] <= time.time() + 1
        versions = dict(store.conn.execute("SELECT component, version FROM schema_version"))
        assert versions == {"messaging": 4, "notifications": 2}
        store.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_failed_sqlite_migration_step_leaves_no_trace(store_settings):
    store = OrderStore.open(store_settings("orders.db"))
    with pytest.raises(sqlite3.OperationalError):
        migrate(store.db, "orders", [*STEPS, "CREATE TABLE t (a INTEGER); SELECT * FROM missing;"])
    tables = {row[0] for row in store.conn.execute("SELECT name FROM sqlite_master")}
    assert "t" not in tables
    assert dict(store.conn.execute("SELECT component, version FROM schema_version"))["orders"] == len(STEPS)
    store.close()


def test_prune_counts_every_batch_of_a_table(notification_store):
    add_rows(notification_store, "inbox", 250, time.time() - 8 * DAY)
    deleted = retention.prune(notification_store, time.time(), 7 * DAY, batch=100)
    assert deleted == {"inbox": 250, "deliveries": 0, "notifications": 0}


def test_the_pruner_adds_up_its_rounds_and_says_what_it_pruned(notification_store, caplog):
    caplog.set_level(logging.INFO, logger=retention.__name__)
    p = pruner(notification_store)
    for round_ in range(2):
        add_rows(notification_store, "inbox", 1, time.time() - 8 * DAY, prefix=f"r{round_}-")
        p.prune_once()
    assert p.pruned == {"inbox": 2, "deliveries": 0, "notifications": 0}
    assert caplog.messages.count("pruned records past their window (604800 s unless the table has "
                                 "its own): inbox 1, deliveries 0, notifications 0") == 2


def test_a_failed_round_says_why(notification_store, caplog):
    error = notification_store.dialect.transient[0]("database is locked")

    def unavailable(job):
        raise error

    notification_store.write = unavailable
    pruner(notification_store).prune_once()
    assert caplog.messages == [f"pruning the deduplication records failed: {error!r}"]


def test_stopping_the_pruner_stops_a_round_between_batches(notification_store):
    add_rows(notification_store, "inbox", 250, time.time() - 8 * DAY)
    p = pruner(notification_store, batch=100)
    write = notification_store.write

    def stop_after_the_first_batch(job):
        result = write(job)
        p.stop()
        return result

    notification_store.write = stop_after_the_first_batch
    p.prune_once()
    assert (p.name, p.daemon) == ("dedup-pruner", True)  # a process may exit while it waits
    assert p.pruned["inbox"] == 100
    assert len(keys(notification_store, "inbox")) == 150
