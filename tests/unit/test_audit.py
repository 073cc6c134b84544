"""The audit's invariants on hand-made snapshots, and `read` and the command on real stores."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from inventory_service.handlers import result_event_id
from inventory_service.unit_of_work import InventoryUnitOfWork
from messaging import events
from messaging.db import outbox
from notification_service.unit_of_work import NotificationUnitOfWork
from ops import audit
from order_service import handlers, idempotency
from tests.unit.factories import delivery, order_placed

ANSWERS = "every notification answers the reservation InventoryService decided for its order"
ONE_EACH = "exactly one notification per reserved order, none for failed ones"

RESERVED, FAILED = str(uuid.uuid4()), str(uuid.uuid4())
PLACED = {RESERVED: str(uuid.uuid4()), FAILED: str(uuid.uuid4())}  # their OrderPlaced event ids


def snapshot(**overrides) -> audit.Snapshot:
    """A consistent snapshot of two orders, one reserved and notified, one failed; override any part."""
    fields = dict(
        orders={RESERVED: "reserved", FAILED: "failed"},
        outcomes={RESERVED: "reserved", FAILED: "failed"},
        answered=dict(PLACED),
        stock=[{"item": "Burger", "initial": 10, "available": 8, "reserved": 2}],
        notified={RESERVED: result_event_id(PLACED[RESERVED])},
        backlogs={"order-service": 0, "inventory-service": 0})
    fields.update(overrides)
    return audit.Snapshot(**fields)


def verdicts(snap: audit.Snapshot) -> dict[str, audit.Invariant]:
    return {invariant.name: invariant for invariant in audit.check(snap)}


def test_a_consistent_snapshot_passes_every_invariant():
    results = verdicts(snapshot())
    assert [name for name, r in results.items() if not r.ok] == []
    assert results[ANSWERS].figures == (
        "1 checked, 0 for another decision, 0 for orders InventoryService has no decision for")


def test_a_notification_for_another_decision_of_the_order_is_broken():
    # The result notified is not the one InventoryService's recorded decision produced: a second
    # reservation decision existed for the order.
    other = result_event_id(str(uuid.uuid4()))
    verdict = verdicts(snapshot(notified={RESERVED: other}))[ANSWERS]
    assert not verdict.ok
    assert verdict.figures.startswith(f"1 checked, 1 for another decision: {RESERVED}")


def test_a_notification_carrying_the_order_placed_event_id_itself_is_broken():
    assert not verdicts(snapshot(notified={RESERVED: PLACED[RESERVED]}))[ANSWERS].ok


def test_a_notification_answering_a_failed_decision_is_broken():
    notified = {RESERVED: result_event_id(PLACED[RESERVED]), FAILED: result_event_id(PLACED[FAILED])}
    results = verdicts(snapshot(notified=notified))
    assert not results[ANSWERS].ok
    assert not results[ONE_EACH].ok


def test_a_notification_for_an_order_inventory_never_decided_is_counted_not_failed():
    notified = {RESERVED: result_event_id(PLACED[RESERVED]), str(uuid.uuid4()): str(uuid.uuid4())}
    verdict = verdicts(snapshot(notified=notified))[ANSWERS]
    assert verdict.ok
    assert verdict.figures == (
        "1 checked, 0 for another decision, 1 for orders InventoryService has no decision for")


def test_a_reserved_order_without_a_notification_is_broken():
    results = verdicts(snapshot(notified={}))
    assert not results[ONE_EACH].ok
    assert results[ANSWERS].ok


class DisconnectedRelay:
    """The relay's interface while it is disconnected: results stay in the outbox."""

    def claimant(self) -> None:
        return None

    def hand_over(self, rows: list) -> None:
        pass


@pytest.fixture
def paths(storage, store_settings, order_store, inventory_store, notification_store) -> list[str]:
    """Real stores: one order reserved by InventoryService and notified by NotificationService."""
    event = order_placed(quantity=1)
    InventoryUnitOfWork(inventory_store, 1.0, DisconnectedRelay()).handle_batch(
        [delivery(events.encode(event))])
    [pending] = outbox.claim(inventory_store.conn, "test", 10, -1.0)
    NotificationUnitOfWork(notification_store).handle_batch([delivery(pending.message.body)])
    return [store_settings(name).database_url or storage.path(name)
            for name in ("orders.db", "inventory.db", "notifications.db")]


def notify_another_result(notification_store) -> None:
    """Rewrite the notification as if it had been sent for another decision's result."""
    notification_store.write(lambda conn: conn.execute("UPDATE notifications SET event_id = ?",
                                                       (str(uuid.uuid4()),)))


def test_read_takes_each_decision_and_notification_from_the_stores(paths, inventory_store,
                                                                  notification_store):
    snap = audit.read(*paths)
    [(order_id, event_id)] = snap.answered.items()
    assert inventory_store.outcomes() == {order_id: "reserved"}
    assert snap.notified == {order_id: result_event_id(event_id)}
    assert verdicts(snap)[ANSWERS].ok

    notify_another_result(notification_store)
    assert not verdicts(audit.read(*paths))[ANSWERS].ok


def test_the_command_exits_1_and_names_the_broken_invariant(paths, notification_store, capsys):
    notify_another_result(notification_store)
    if paths[0].startswith("postgresql://"):
        args = ["--orders-url", paths[0], "--inventory-url", paths[1], "--notifications-url", paths[2]]
    else:
        args = ["--orders-db", paths[0], "--inventory-db", paths[1], "--notifications-db", paths[2]]
    assert audit.main(args) == 1
    assert f"[BROKEN] {ANSWERS}: 1 checked, 1 for another decision" in capsys.readouterr().out


def test_a_reserved_order_decided_before_the_dedup_window_may_have_lost_its_notification():
    assert not verdicts(snapshot(notified={}))[ONE_EACH].ok
    verdict = verdicts(snapshot(notified={}, expired=frozenset({RESERVED, FAILED})))[ONE_EACH]
    assert verdict.ok
    assert verdict.figures.endswith("0 missing, 0 for failed orders, "
                                    "1 decided before the deduplication window")


def test_read_counts_the_orders_decided_before_the_window(paths, inventory_store,
                                                          notification_store):
    # (the fixture's order was placed without OrderService: give the snapshot its order)
    placed = {order_id: "reserved" for order_id in inventory_store.outcomes()}
    notification_store.write(lambda conn: conn.execute("DELETE FROM notifications"))
    snap = replace(audit.read(*paths), orders=placed)
    assert not snap.expired and not verdicts(snap)[ONE_EACH].ok
    inventory_store.write(lambda conn: conn.execute("UPDATE reservations SET created_at = 0"))
    snap = replace(audit.read(*paths, retention=86400.0), orders=placed)
    assert snap.expired == set(placed)
    assert verdicts(snap)[ONE_EACH].ok


KEYS = "every Idempotency-Key names the order it placed"


def test_a_key_naming_no_stored_order_is_broken():
    assert verdicts(snapshot(keyed=frozenset({RESERVED})))[KEYS].ok
    broken = verdicts(snapshot(keyed=frozenset({RESERVED, "lost-order"})))[KEYS]
    assert not broken.ok
    assert broken.figures == "2 keys, 1 naming no stored order"


def test_read_takes_the_keys_from_the_order_store(paths, order_store):
    fields = {"user_id": "u", "item": "Burger", "quantity": 1}
    order, message = handlers.place(fields, "2026-12-05T00:00:00.000000Z")
    order_store.add_keyed(order, message, None, idempotency.request_key("k", None, fields))
    assert audit.read(*paths).keyed == {order.order_id}
    order_store.write(lambda conn: conn.execute("DELETE FROM orders WHERE order_id = ?",
                                                (order.order_id,)))
    assert not verdicts(audit.read(*paths))[KEYS].ok
