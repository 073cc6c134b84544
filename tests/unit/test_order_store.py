"""OrderService storage: the order and its outbox row together, listing, and final status."""
from __future__ import annotations

import dataclasses
import time

import pytest

from messaging.db import outbox, retention
from order_service import handlers, idempotency
from order_service import store as store_module
from order_service.handlers import ListQuery
from order_service.store import OrderStore
from tests.unit import factories
from tests.unit.factories import TIMESTAMP


def place(store: OrderStore, user_id: str = "user123", item: str = "Burger", quantity: int = 1):
    order, message = handlers.place({"user_id": user_id, "item": item, "quantity": quantity},
                                  TIMESTAMP)
    store.add(order, message)
    return order, message


def finish(store: OrderStore, order_id: str, status: str, reason: str | None = None) -> str:
    return store.write(lambda conn: factories.finish(store, conn, order_id, status, reason,
                                                 "2026-02-11T00:00:01.000000Z"))


def test_add_stores_the_order_and_its_outbox_row(order_store):
    order, message = place(order_store)
    assert order_store.get(order.order_id) == order
    assert order_store.outbox_backlog() == 1
    [pending] = outbox.claim(order_store.conn, "test", 10, -1.0)
    assert pending.message == message


def test_add_is_atomic_when_the_outbox_insert_fails(order_store):
    order, message = handlers.place({"user_id": "u", "item": "Burger", "quantity": 1}, TIMESTAMP)
    unstorable = dataclasses.replace(message, body=object())
    with pytest.raises(order_store.dialect.errors):
        order_store.add(order, unstorable)
    assert order_store.get(order.order_id) is None
    assert order_store.outbox_backlog() == 0


def test_add_is_atomic_when_the_order_insert_fails(order_store):
    order, _ = place(order_store)
    _, other_message = handlers.place({"user_id": "u", "item": "Pizza", "quantity": 1}, TIMESTAMP)
    with pytest.raises(order_store.dialect.errors) as raised:
        order_store.add(order, other_message)
    assert "IntegrityError" in {kind.__name__ for kind in type(raised.value).__mro__}
    assert order_store.outbox_backlog() == 1


def test_get_unknown_order(order_store):
    assert order_store.get("no-such-order") is None


def test_find_newest_first_with_total(order_store):
    placed = [place(order_store, user_id=f"u{n}")[0].order_id for n in range(5)]
    page = order_store.find(ListQuery())
    assert (page.count, page.count_capped, page.next) == (5, False, None)
    assert [o.order_id for o in page.orders] == list(reversed(placed))


def test_find_pages_with_limit_and_offset(order_store):
    placed = [place(order_store)[0].order_id for _ in range(7)]
    newest_first = list(reversed(placed))
    page = order_store.find(ListQuery(limit=3, offset=2))
    assert page.count == 7
    assert [o.order_id for o in page.orders] == newest_first[2:5]
    page = order_store.find(ListQuery(limit=3, offset=6))
    assert ([o.order_id for o in page.orders], page.next) == (newest_first[6:], None)
    page = order_store.find(ListQuery(limit=3, offset=100))
    assert (page.orders, page.count, page.next) == ([], 7, None)


def test_the_cursor_walks_every_order_once_newest_first_however_the_filters(order_store):
    placed = [place(order_store, user_id=f"u{n % 2}")[0].order_id for n in range(7)]
    for filters, expected in [({}, placed[::-1]), ({"user_id": "u1"}, placed[1::2][::-1])]:
        seen: list[str] = []
        before = None
        while True:
            page = order_store.find(ListQuery(limit=2, before=before, **filters))
            seen += [o.order_id for o in page.orders]
            assert page.count == len(expected), "the count ignores the cursor"
            if page.next is None:
                break
            before = page.next
        assert seen == expected
    last = order_store.find(ListQuery(limit=7))
    assert (len(last.orders), last.next) == (7, None), "a page that ends exactly at the last order"


def test_the_count_stops_at_its_limit(order_store, monkeypatch):
    monkeypatch.setattr(store_module, "COUNT_LIMIT", 3)
    for _ in range(5):
        place(order_store)
    page = order_store.find(ListQuery(limit=1))
    assert (page.count, page.count_capped) == (3, True)
    assert (order_store.find(ListQuery(limit=1, status="failed")).count_capped) is False


def test_find_filters_by_status_and_user(order_store):
    a1 = place(order_store, user_id="alice")[0].order_id
    b1 = place(order_store, user_id="bob")[0].order_id
    a2 = place(order_store, user_id="alice")[0].order_id
    finish(order_store, a1, "reserved")
    finish(order_store, b1, "failed", "no stock")

    def ids(**filters):
        page = order_store.find(ListQuery(**filters))
        assert page.count == len(page.orders)
        return [o.order_id for o in page.orders]

    assert ids(user_id="alice") == [a2, a1]
    assert ids(status="accepted") == [a2]
    assert ids(status="reserved", user_id="alice") == [a1]
    assert ids(status="reserved", user_id="bob") == []
    assert ids(status="failed") == [b1]
    assert order_store.status_counts() == {"accepted": 1, "reserved": 1, "failed": 1}


def test_finish_moves_an_accepted_order(order_store):
    order, _ = place(order_store)
    assert finish(order_store, order.order_id, "failed", "unknown item") == "updated"
    stored = order_store.get(order.order_id)
    assert (stored.status, stored.reason) == ("failed", "unknown item")
    assert stored.updated_at == "2026-02-11T00:00:01.000000Z"
    assert stored.created_at == TIMESTAMP


def test_finish_never_moves_a_final_order(order_store):
    order, _ = place(order_store)
    assert finish(order_store, order.order_id, "reserved") == "updated"
    assert finish(order_store, order.order_id, "failed", "late") == "duplicate"
    assert finish(order_store, order.order_id, "reserved") == "duplicate"
    stored = order_store.get(order.order_id)
    assert (stored.status, stored.reason) == ("reserved", None)


def test_finish_unknown_order(order_store):
    assert finish(order_store, "no-such-order", "reserved") == "unknown"
    assert order_store.find(ListQuery()).count == 0


def test_writable(order_store):
    assert order_store.writable() is True
    if order_store.dialect.name == "sqlite":
        assert not order_store.conn.in_transaction


def test_release_claims_frees_stale_claims(order_store, backend):
    place(order_store)
    assert len(outbox.claim(order_store.conn, "crashed-relay", 10, 3600.0)) == 1
    assert outbox.claim(order_store.conn, "new-relay", 10, 60.0) == []
    order_store.release_claims()
    if backend == "sqlite":  # the file is this host's alone: every claim at start is stale
        assert len(outbox.claim(order_store.conn, "new-relay", 10, 60.0)) == 1
    else:  # a shared database: the claim may be a running instance's, and waits for its lease
        assert outbox.claim(order_store.conn, "new-relay", 10, 60.0) == []


def test_a_lapsed_claim_is_taken_over(order_store):
    place(order_store)
    assert len(outbox.claim(order_store.conn, "dead-relay", 10, -1.0)) == 1  # lease over at once
    [row] = outbox.claim(order_store.conn, "live-relay", 10, 60.0)
    assert outbox.claim(order_store.conn, "third-relay", 10, 60.0) == []
    assert row.message.exchange == "orders"


def test_finish_many_reports_each_change_in_order(order_store):
    a = place(order_store)[0].order_id
    b = place(order_store)[0].order_id
    finish(order_store, b, "failed", "no stock")
    changes = [(a, "reserved", None), ("no-such-order", "reserved", None), (b, "reserved", None),
               (a, "failed", "late")]
    outcomes = order_store.write(
        lambda conn: order_store.finish_many(conn, changes, "2030-01-01T00:00:00Z"))
    assert outcomes == ["updated", "unknown", "duplicate", "duplicate"]
    assert order_store.get(a).status == "reserved"
    assert order_store.get(a).updated_at == "2030-01-01T00:00:00Z"
    assert (order_store.get(b).status, order_store.get(b).reason) == ("failed", "no stock")


def test_finish_many_spans_statement_chunks(order_store):
    ids = [place(order_store)[0].order_id for _ in range(1200)]
    outcomes = order_store.write(lambda conn: order_store.finish_many(
        conn, [(i, "failed", f"reason {n}") for n, i in enumerate(ids)], "2030-01-01T00:00:00Z"))
    assert outcomes == ["updated"] * 1200
    assert order_store.status_counts() == {"failed": 1200}
    assert order_store.get(ids[700]).reason == "reason 700"


def test_add_returns_the_outbox_row_it_wrote(order_store):
    order, message = handlers.place({"user_id": "u", "item": "Burger", "quantity": 1}, TIMESTAMP)
    pending = order_store.add(order, message, "relay-a")
    row = order_store.conn.execute("SELECT id, created_at, claimed_by FROM outbox").fetchone()
    assert (pending.id, pending.created_at, pending.message) == (row["id"], row["created_at"],
                                                                 message)
    assert row["claimed_by"] == "relay-a", "born claimed by the relay it is handed to"


def test_add_with_a_known_message_id_stores_the_order_and_returns_no_row(order_store):
    _, message = place(order_store)
    other, _ = handlers.place({"user_id": "u", "item": "Pizza", "quantity": 1}, TIMESTAMP)
    assert order_store.add(other, message) is None
    assert order_store.get(other.order_id) == other
    assert order_store.outbox_backlog() == 1


def test_change_marks_move_with_every_change_and_count_at_most_their_limit(order_store, monkeypatch):
    assert order_store.change_marks() == (0, 0) and order_store.change_marks("alice") == (0, 0)
    alice = [place(order_store, user_id="alice")[0].order_id for _ in range(2)]
    place(order_store, user_id="bob")
    newest, accepted = order_store.change_marks()
    assert accepted == 3 and order_store.change_marks("alice") == (newest - 1, 2)
    finish(order_store, alice[0], "reserved")
    assert order_store.change_marks() == (newest, 2), "a final status lowers the count"
    assert order_store.change_marks("alice") == (newest - 1, 1)
    monkeypatch.setattr(store_module, "CHANGE_MARK_LIMIT", 1)
    assert order_store.change_marks() == (newest, 1), "counted up to the limit, no further"
    assert order_store.change_marks("alice") == (newest - 1, 1)


def test_a_users_change_marks_read_an_index_range_not_their_history(storage):
    store = OrderStore.open(storage)  # SQLite's query plan; PostgreSQL's planner decides by its statistics
    try:
        plan = " ".join(str(tuple(row)) for row in store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM orders WHERE user_id = ? AND status = ? LIMIT 1000",
            ("alice", "accepted")))
    finally:
        store.close()
    assert "orders_by_user_status" in plan, plan


# --- Idempotency-Key: the key, the order and its event in one transaction ---

def keyed(store: OrderStore, key: str = "k-1", scope: str = "user123", quantity: int = 1):
    fields = {"user_id": scope, "item": "Burger", "quantity": quantity}
    order, message = handlers.place(fields, TIMESTAMP)
    asked = idempotency.RequestKey(scope, key, idempotency.fingerprint(fields))
    return order, message, asked, store.add_keyed(order, message, None, asked)


def test_a_new_key_stores_the_key_the_order_and_its_event_together(order_store):
    order, message, asked, (pending, earlier) = keyed(order_store)
    assert earlier is None and pending is not None and pending.message == message
    assert order_store.get(order.order_id) == order
    assert order_store.outbox_backlog() == 1
    assert order_store.earlier(asked) == idempotency.Earlier(asked.fingerprint, order.order_id,
                                                             order.created_at)


def test_a_key_seen_before_stores_nothing_and_names_the_first_order(order_store):
    first, _, _, _ = keyed(order_store)
    second, _, asked, (pending, earlier) = keyed(order_store, quantity=3)
    assert pending is None
    assert earlier == idempotency.Earlier(idempotency.fingerprint(
        {"user_id": "user123", "item": "Burger", "quantity": 1}), first.order_id, first.created_at)
    assert earlier.fingerprint != asked.fingerprint  # the caller's 422
    assert order_store.get(second.order_id) is None
    assert order_store.find(ListQuery()).count == 1 and order_store.outbox_backlog() == 1


def test_keys_are_scoped_to_their_caller(order_store):
    keyed(order_store, scope="alice")
    _, _, _, (pending, earlier) = keyed(order_store, scope="bob")
    assert earlier is None and pending is not None
    assert order_store.find(ListQuery()).count == 2


def test_the_key_is_rolled_back_with_an_order_that_fails(order_store):
    fields = {"user_id": "u", "item": "Burger", "quantity": 1}
    order, message = handlers.place(fields, TIMESTAMP)
    asked = idempotency.RequestKey("u", "k", idempotency.fingerprint(fields))
    with pytest.raises(order_store.dialect.errors):
        order_store.add_keyed(order, dataclasses.replace(message, body=object()), None, asked)
    assert order_store.earlier(asked) is None
    assert order_store.get(order.order_id) is None


def test_a_key_past_its_window_is_forgotten_and_pruned(order_store):
    first, _, asked, _ = keyed(order_store)
    order_store.keep_keys_for(60.0)
    assert order_store.earlier(asked) is not None
    order_store.write(lambda conn: conn.execute("UPDATE idempotency_keys SET created_at = created_at - 61"))
    assert order_store.earlier(asked) is None
    second, _, _, (pending, earlier) = keyed(order_store)  # the same key: a new order
    assert earlier is None and pending is not None
    assert order_store.earlier(asked).order_id == second.order_id
    order_store.write(lambda conn: conn.execute("UPDATE idempotency_keys SET created_at = created_at - 61"))
    deleted = retention.prune(order_store, time.time(), 7 * 86400.0)
    assert deleted["idempotency_keys"] == 1, "its own window, not the deduplication window"
    assert deleted["inbox"] == 0
    assert {o.order_id for o in order_store.find(ListQuery()).orders} == {first.order_id, second.order_id}


def test_keys_within_their_window_are_kept_by_the_pruner(order_store):
    keyed(order_store)
    assert retention.prune(order_store, time.time(), 1.0)["idempotency_keys"] == 0  # default: 24 h
    assert retention.prune(order_store, time.time() + 86401, 1e9)["idempotency_keys"] == 1
