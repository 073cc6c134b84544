"""One PostgreSQL outbox shared by several relays: each row is claimed by one of them at a time."""
from __future__ import annotations

import threading
from collections import Counter

import pytest

from messaging.db import outbox
from messaging.db.messaging_store import MessagingStore
from messaging.events import Message
from messaging.settings import StorageSettings

ROWS, RELAYS, BATCH = 3000, 4, 25


@pytest.fixture
def shared(store_settings) -> MessagingStore:
    store = MessagingStore.open(store_settings("orders.db"))
    store.write(lambda conn: outbox.add_many(conn, [
        Message("orders", "order.placed", b"{}", f"msg-{n}", f"order-{n}", "OrderPlaced")
        for n in range(ROWS)]))
    yield store
    store.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_relays_claiming_at_once_never_claim_the_same_row(shared, store_settings):
    """Four relays (each with its own pool, like four instances) race for the same rows."""
    settings: StorageSettings = store_settings("orders.db")
    stores = [MessagingStore.open(settings) for _ in range(RELAYS)]
    claimed: list[list[int]] = [[] for _ in range(RELAYS)]
    start = threading.Barrier(RELAYS)

    def relay(n: int) -> None:
        view = stores[n].outbox_for(f"relay-{n}")
        start.wait()
        while rows := view.claim(BATCH):
            claimed[n].extend(row.id for row in rows)

    threads = [threading.Thread(target=relay, args=(n,)) for n in range(RELAYS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    counts = Counter(row for rows in claimed for row in rows)
    twice = [row for row, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} rows claimed by two relays at once"
    assert len(counts) == ROWS
    assert sum(1 for rows in claimed if rows) > 1, "the relays did not overlap; no race was run"


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_dead_relays_rows_are_taken_over_after_the_lease(shared):
    dead = outbox.Outbox(shared.db, "dead-instance", lease=0.0)
    taken = dead.claim(ROWS)
    assert len(taken) == ROWS
    live = shared.outbox_for("live-instance")
    assert {row.id for row in live.claim(ROWS)} == {row.id for row in taken}
    assert shared.outbox_for("third").claim(ROWS) == []  # the live claim holds its lease


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_live_relay_that_renews_keeps_its_rows(shared):
    taken = outbox.Outbox(shared.db, "live-instance", lease=0.0).claim(ROWS)
    assert shared.outbox_for("live-instance").renew() == ROWS  # before another relay's tick
    assert len(taken) == ROWS
    assert shared.outbox_for("other").claim(ROWS) == []
