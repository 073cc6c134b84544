"""The relay's bookkeeping of confirmed rows (no broker: confirms are fed in directly)."""
from __future__ import annotations

import pika.spec
import pytest

from messaging import outbox, relay
from messaging.events import Message
from messaging.relay import Relay
from messaging.settings import BrokerSettings
from messaging.store import MessagingStore


class Loop:
    """The part of pika's ioloop the relay schedules on, with the timers kept for the test to run."""

    def __init__(self) -> None:
        self.timers: list = []

    def call_later(self, delay: float, callback) -> None:
        self.timers.append((delay, callback))

    def run_timers(self) -> None:
        timers, self.timers = self.timers, []
        for _, callback in timers:
            callback()


class Connection:
    def __init__(self) -> None:
        self.ioloop = Loop()


class Frame:
    def __init__(self, tag: int, multiple: bool = True) -> None:
        self.method = pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple)


@pytest.fixture
def db(store_settings) -> MessagingStore:
    store = MessagingStore.open(store_settings("relay.db"))
    yield store
    store.close()


@pytest.fixture
def published(db) -> tuple[Relay, Loop]:
    """A relay with 5 rows claimed and published (tags 1-5), as if its channel were open."""
    r = Relay(BrokerSettings(), db, "test")
    r._connection = Connection()
    r._pump = lambda look_in_outbox=False: None  # nothing else to publish in these tests
    rows = db.write(lambda conn: [outbox.add(conn, Message("orders", "order.placed", b"{}",
                                                           f"m{n}", f"o{n}", "OrderPlaced"),
                                             r.owner) for n in range(5)])
    for row in rows:
        r._inflight.add(row)
    return r, r._connection.ioloop


def backlog(db: MessagingStore) -> int:
    return outbox.backlog(db.conn)


def deletes_counted(db: MessagingStore, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = outbox.delete

    def counting(conn, ids):
        calls.append(len(ids))
        real(conn, ids)
    monkeypatch.setattr(outbox, "delete", counting)
    return calls


def test_confirms_are_deleted_together_after_the_delay(published, db, monkeypatch):
    r, loop = published
    deletes = deletes_counted(db, monkeypatch)
    for tag in (2, 4, 5):  # three confirm frames
        r._on_confirm(Frame(tag))
    assert backlog(db) == 5, "confirmed rows wait, still claimed by this relay"
    assert [delay for delay, _ in loop.timers] == [relay.DELETE_DELAY], "one timer for the lot"
    loop.run_timers()
    assert backlog(db) == 0
    assert deletes == [5], "one transaction for three confirms"


def test_a_full_batch_is_deleted_without_waiting(published, db, monkeypatch):
    r, _ = published
    monkeypatch.setattr(relay, "DELETE_BATCH", 3)
    deletes = deletes_counted(db, monkeypatch)
    r._on_confirm(Frame(2))
    assert deletes == []
    r._on_confirm(Frame(3))
    assert deletes == [3] and backlog(db) == 2


def test_a_disconnect_deletes_what_was_confirmed_before_giving_the_claims_back(published, db):
    r, _ = published
    r._on_confirm(Frame(3))
    r._after_disconnect()
    unclaimed = db.conn.execute("SELECT COUNT(*) FROM outbox WHERE claimed_by IS NULL").fetchone()[0]
    assert (backlog(db), unclaimed) == (2, 2), "only the unconfirmed rows are published again"
