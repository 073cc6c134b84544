"""The outbox, inbox and delivery-count tables, and the SQLite transaction helper."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import psycopg
import pytest

from messaging.db import inbox, outbox
from messaging.db.dialect import SQLITE
from messaging.db.messaging_store import MessagingStore
from messaging.db.sqlite import Database, open_db
from messaging.events import Message
from messaging.settings import StorageSettings
from tests.client import wait_for
from tests.unit.factories import connect, create_inbox, create_outbox, mark_processed, transaction


@pytest.fixture
def db(storage: StorageSettings) -> Iterator[sqlite3.Connection]:
    conn = open_db(storage.path("outbox.db"), storage)
    create_outbox(conn)
    create_inbox(conn)
    yield conn
    conn.close()


def message(n: int) -> Message:
    return Message("orders", "order.placed", f'{{"n":{n}}}'.encode(), f"msg-{n}", f"order-{n}",
                   "OrderPlaced")


def add_messages(db: sqlite3.Connection, count: int) -> None:
    with transaction(db):
        for n in range(count):
            outbox.add_many(db, [message(n)])


def ids_of(pending) -> list[str]:
    return [p.message.message_id for p in pending]


def test_open_db_uses_wal_and_the_configured_settings(tmp_path):
    settings = StorageSettings(data_dir=str(tmp_path), synchronous="FULL", busy_timeout_ms=1234)
    conn = open_db(settings.path("x.db"), settings)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.close()


def test_storage_path_creates_the_directory(tmp_path):
    settings = StorageSettings(data_dir=str(tmp_path / "a" / "b"))
    path = settings.path("f.db")
    assert (tmp_path / "a" / "b").is_dir()
    assert path == str(tmp_path / "a" / "b" / "f.db")


def test_add_and_claim_round_trip(db):
    add_messages(db, 1)
    assert outbox.backlog(db) == 1
    [pending] = outbox.claim(db, "relay-a", 10, 30.0)
    assert pending.message == message(0)
    assert isinstance(pending.message.body, bytes)
    assert pending.created_at > 0


def test_add_same_message_id_twice_keeps_one_row(db):
    with transaction(db):
        outbox.add_many(db, [message(1)])
        outbox.add_many(db, [message(1)])
    with transaction(db):
        outbox.add_many(db, [message(1)])
    assert outbox.backlog(db) == 1


def test_claim_returns_oldest_first_and_respects_limit(db):
    add_messages(db, 5)
    assert ids_of(outbox.claim(db, "relay-a", 3, 30.0)) == ["msg-0", "msg-1", "msg-2"]
    assert ids_of(outbox.claim(db, "relay-a", 10, 30.0)) == ["msg-3", "msg-4"]
    assert outbox.claim(db, "relay-a", 10, 30.0) == []


def test_claim_on_empty_outbox(db):
    assert outbox.claim(db, "relay-a", 10, 30.0) == []
    assert outbox.backlog(db) == 0


def test_second_owner_cannot_claim_under_an_unexpired_lease(db):
    add_messages(db, 2)
    assert len(outbox.claim(db, "relay-a", 10, 60.0)) == 2
    assert outbox.claim(db, "relay-b", 10, 60.0) == []
    assert outbox.claim(db, "relay-a", 10, 60.0) == [], "a lease also stops its own owner"


def test_second_owner_can_claim_after_the_lease_expires(db):
    add_messages(db, 2)
    assert len(outbox.claim(db, "relay-a", 10, 0.05)) == 2
    assert outbox.claim(db, "relay-b", 10, 60.0) == []
    taken = wait_for(lambda: outbox.claim(db, "relay-b", 10, 60.0))
    assert ids_of(taken) == ["msg-0", "msg-1"]


def test_already_expired_lease_is_claimable_at_once(db):
    add_messages(db, 1)
    assert len(outbox.claim(db, "relay-a", 10, -1.0)) == 1
    assert ids_of(outbox.claim(db, "relay-b", 10, 60.0)) == ["msg-0"]


def test_delete_removes_only_the_given_rows(db):
    add_messages(db, 3)
    pending = outbox.claim(db, "relay-a", 10, 30.0)
    outbox.delete(db, [pending[0].id, pending[2].id])
    assert outbox.backlog(db) == 1
    outbox.release_all(db)
    assert ids_of(outbox.claim(db, "relay-a", 10, 30.0)) == ["msg-1"]


def test_release_makes_rows_claimable_again(db):
    add_messages(db, 3)
    pending = outbox.claim(db, "relay-a", 10, 60.0)
    outbox.release(db, [pending[1].id])
    assert ids_of(outbox.claim(db, "relay-b", 10, 60.0)) == ["msg-1"]
    assert outbox.backlog(db) == 3


def test_release_with_delay_holds_the_row_back_until_the_delay_passes(db):
    add_messages(db, 1)
    [pending] = outbox.claim(db, "relay-a", 10, 60.0)
    outbox.release(db, [pending.id], delay=0.05)
    assert outbox.claim(db, "relay-b", 10, 60.0) == []
    assert ids_of(wait_for(lambda: outbox.claim(db, "relay-b", 10, 60.0))) == ["msg-0"]


def test_release_all_for_one_owner_leaves_others_claims(db):
    add_messages(db, 4)
    outbox.claim(db, "relay-a", 2, 60.0)
    outbox.claim(db, "relay-b", 2, 60.0)
    outbox.release_all(db, "relay-a")
    assert ids_of(outbox.claim(db, "relay-c", 10, 60.0)) == ["msg-0", "msg-1"]


def test_release_all_frees_everybody(db):
    add_messages(db, 4)
    outbox.claim(db, "relay-a", 2, 60.0)
    outbox.claim(db, "relay-b", 2, 60.0)
    outbox.release_all(db)
    assert ids_of(outbox.claim(db, "relay-c", 10, 60.0)) == ["msg-0", "msg-1", "msg-2", "msg-3"]


def test_backlog_counts_claimed_and_unclaimed_rows(db):
    add_messages(db, 3)
    outbox.claim(db, "relay-a", 1, 60.0)
    assert outbox.backlog(db) == 3


def test_mark_processed_is_true_once_then_false(db):
    assert mark_processed(db, "event-1") is True
    assert mark_processed(db, "event-1") is False
    assert mark_processed(db, "event-2") is True


def test_mark_processed_many_returns_only_the_new_ids_across_statement_chunks(db):
    assert mark_processed(db, "event-3") is True
    ids = [f"event-{n}" for n in range(1200)] + ["event-5"]  # 1,200 rows: three statements
    with transaction(db):
        fresh = inbox.mark_processed_many(db, ids)
    assert fresh == {f"event-{n}" for n in range(1200)} - {"event-3"}
    assert inbox.mark_processed_many(db, ids) == set()
    assert inbox.mark_processed_many(db, []) == set()
    assert db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 1200


def test_add_many_queues_new_messages_in_order_and_skips_known_ones(db):
    outbox.add_many(db, [message(7)])
    batch = [message(n) for n in range(1100)]
    with transaction(db):
        added = outbox.add_many(db, batch, "relay-a")
    assert ids_of(added) == [f"msg-{n}" for n in range(1100) if n != 7]
    assert [p.id for p in added] == sorted(p.id for p in added)
    assert all(p.message == batch[int(p.message.message_id[4:])] for p in added)
    claimed = db.execute("SELECT COUNT(*) FROM outbox WHERE claimed_by = 'relay-a'").fetchone()[0]
    assert claimed == 1099, "born claimed by the relay they are handed to"
    assert outbox.add_many(db, batch) == []
    assert outbox.backlog(db) == 1100


def test_count_delivery_counts_from_two(db):
    assert [inbox.count_delivery(db, "id:m") for _ in range(3)] == [2, 3, 4]
    assert inbox.count_delivery(db, "id:other") == 2


def test_transaction_commits(db):
    with transaction(db):
        outbox.add_many(db, [message(1)])
    assert not db.in_transaction
    assert outbox.backlog(db) == 1


def test_transaction_rolls_back_on_an_exception(db):
    with pytest.raises(RuntimeError, match="boom"), transaction(db):
        outbox.add_many(db, [message(1)])
        assert mark_processed(db, "event-1")
        raise RuntimeError("boom")
    assert not db.in_transaction
    assert outbox.backlog(db) == 0
    assert mark_processed(db, "event-1") is True


def test_transaction_holds_the_write_lock(storage):
    path = storage.path("lock.db")
    busy = StorageSettings(data_dir=storage.data_dir, busy_timeout_ms=50)
    first, second = open_db(path, busy), open_db(path, busy)
    create_outbox(first)
    with transaction(first):
        with pytest.raises(sqlite3.OperationalError) as caught:
            second.execute("BEGIN IMMEDIATE")
        assert SQLITE.is_transient(caught.value)
    first.close()
    second.close()


def test_is_transient_only_for_operational_errors():
    assert SQLITE.is_transient(sqlite3.OperationalError("database is locked"))
    assert not SQLITE.is_transient(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not SQLITE.is_transient(ValueError("x"))


def test_database_keeps_one_connection_per_thread(storage):
    database = Database(storage.path("t.db"), storage)
    mine = database.conn
    assert database.conn is mine
    seen = []
    thread = threading.Thread(target=lambda: seen.append(database.conn))
    thread.start()
    thread.join()
    assert seen[0] is not mine
    seen[0].close()
    other = connect(database)
    assert other is not mine
    other.close()
    database.close()
    assert database.conn is not mine
    database.close()


def test_release_without_a_delay_frees_the_row_outright(db):
    add_messages(db, 1)
    [pending] = outbox.claim(db, "relay-a", 10, 30.0)
    outbox.release(db, [pending.id])
    assert tuple(db.execute("SELECT claimed_by, claimed_until FROM outbox").fetchone()) == (None, None)


def test_sqlite_outbox_reports_a_database_error_as_outbox_unavailable(storage):
    store = MessagingStore(Database(storage.path("gone.db"), storage))
    view = store.outbox_for("relay-a")
    store.conn.execute("DROP TABLE outbox")
    with pytest.raises(outbox.OutboxUnavailable, match="^no such table: outbox$") as raised:
        view.claim(10)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    store.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_outbox_reports_a_database_error_as_outbox_unavailable(store_settings):
    store = MessagingStore.open(store_settings("gone.db"))
    view = store.outbox_for("relay-a")
    assert isinstance(view, outbox.Outbox)
    store.write(lambda conn: conn.execute("DROP TABLE outbox"))
    with pytest.raises(outbox.OutboxUnavailable, match='relation "outbox" does not exist') as raised:
        view.claim(10)
    assert str(raised.value) == str(raised.value.__cause__)
    assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedTable)
    store.close()


def test_renew_extends_only_the_owners_claims(db):
    add_messages(db, 4)
    outbox.claim(db, "relay-a", 2, 0.05)
    outbox.claim(db, "relay-b", 2, 0.05)
    assert outbox.renew(db, "relay-a", 60.0) == 2
    taken = wait_for(lambda: outbox.claim(db, "relay-c", 10, 60.0))
    assert ids_of(taken) == ["msg-2", "msg-3"], "relay-b's lapsed; relay-a's were renewed"


def test_pending_counts_the_rows_and_tells_when_the_oldest_was_committed(db):
    assert outbox.pending(db) == (0, None)
    with transaction(db):
        first = outbox.add_many(db, [message(1)])[0]
    with transaction(db):
        outbox.add_many(db, [message(2)])
    assert outbox.pending(db) == (2, first.created_at)
