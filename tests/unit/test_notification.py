"""NotificationService: what to say, and saying it once per reserved order (no broker)."""
from __future__ import annotations

import logging
import sqlite3

import pytest

from messaging import events, topology
from messaging.events import INVENTORY_FAILED
from messaging.service import Lifecycle
from messaging.settings import ServiceSettings
from notification_service.__main__ import SERVICE, own_health
from notification_service.handlers import notification_for
from notification_service.store import NotificationStore
from notification_service.unit_of_work import NotificationUnitOfWork
from tests.unit.factories import delivery, inventory_result, notified_orders, payload_of, to_body

UNIT_OF_WORK_LOGGER = "notification_service.unit_of_work"


@pytest.fixture
def unit_of_work(notification_store: NotificationStore) -> NotificationUnitOfWork:
    return NotificationUnitOfWork(notification_store)


def sent_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == UNIT_OF_WORK_LOGGER and r.getMessage().startswith("Notification sent")]


def test_notification_for_a_reservation():
    result = inventory_result(quantity=3, item="Pizza")
    text = notification_for(result)
    assert "3 x Pizza" in text
    assert result.order_id in text


def test_no_notification_for_a_failure():
    assert notification_for(inventory_result(event_type=INVENTORY_FAILED, reason="no")) is None


def test_reserved_order_is_recorded_and_logged_once(unit_of_work, notification_store, caplog):
    caplog.set_level(logging.INFO, logger=UNIT_OF_WORK_LOGGER)
    result = inventory_result()
    body = events.encode(result)
    assert unit_of_work.handle_batch([delivery(body), delivery(body)]) == []
    assert unit_of_work.handle_batch([delivery(body, redelivered=True)]) == []
    assert notified_orders(notification_store) == [result.order_id]
    assert notification_store.count() == 1
    [line] = sent_lines(caplog)
    assert f"order_id={result.order_id}" in line
    assert f"event_id={result.event_id}" in line


def test_one_notification_per_order_even_with_a_different_event_id(unit_of_work, notification_store,
                                                                   caplog):
    caplog.set_level(logging.INFO, logger=UNIT_OF_WORK_LOGGER)
    first = inventory_result()
    again = inventory_result(order_id=first.order_id)
    unit_of_work.handle_batch([delivery(events.encode(first))])
    unit_of_work.handle_batch([delivery(events.encode(again))])
    assert notification_store.count() == 1
    assert len(sent_lines(caplog)) == 1


def test_one_line_per_reserved_order_in_a_mixed_batch(unit_of_work, notification_store, caplog):
    caplog.set_level(logging.INFO, logger=UNIT_OF_WORK_LOGGER)
    reserved = [inventory_result() for _ in range(3)]
    failed = [inventory_result(event_type=INVENTORY_FAILED, reason="no stock") for _ in range(2)]
    bodies = [events.encode(r) for r in reserved + failed]
    unit_of_work.handle_batch([delivery(b) for b in bodies + bodies])
    assert sorted(notified_orders(notification_store)) == sorted(r.order_id for r in reserved)
    lines = sent_lines(caplog)
    assert len(lines) == 3
    for result in reserved:
        assert sum(f"order_id={result.order_id}" in line for line in lines) == 1


def test_never_notifies_for_inventory_failed(unit_of_work, notification_store, caplog):
    caplog.set_level(logging.INFO, logger=UNIT_OF_WORK_LOGGER)
    failed = inventory_result(event_type=INVENTORY_FAILED, reason="insufficient stock")
    assert unit_of_work.handle_batch([delivery(events.encode(failed))] * 3) == []
    assert notification_store.count() == 0
    assert sent_lines(caplog) == []


def test_failed_then_reserved_for_the_same_order_notifies_once(unit_of_work, notification_store):
    failed = inventory_result(event_type=INVENTORY_FAILED, reason="x")
    reserved = inventory_result(order_id=failed.order_id)
    unit_of_work.handle_batch([delivery(events.encode(failed)), delivery(events.encode(reserved))])
    assert notified_orders(notification_store) == [failed.order_id]


@pytest.mark.parametrize("body, reason", [
    (b"garbage", "malformed-json"),
    (b'"InventoryReserved"', "not-an-object"),
    (to_body({**payload_of(inventory_result()), "event_type": "OrderPlaced"}),
     "unknown-event-type"),
    (to_body({**payload_of(inventory_result()), "order_id": "x"}), "invalid-field"),
])
def test_poison_is_rejected_and_sends_nothing(unit_of_work, notification_store, caplog, body, reason):
    caplog.set_level(logging.INFO, logger=UNIT_OF_WORK_LOGGER)
    good = inventory_result()
    bad = delivery(body)
    rejections = unit_of_work.handle_batch([bad, delivery(events.encode(good))])
    assert [(r.delivery, r.reason) for r in rejections] == [(bad, reason)]
    assert notified_orders(notification_store) == [good.order_id]
    assert len(sent_lines(caplog)) == 1


def test_dedup_survives_reopening_the_store(unit_of_work, notification_store, store_settings, caplog):
    caplog.set_level(logging.INFO, logger=UNIT_OF_WORK_LOGGER)
    body = events.encode(inventory_result())
    unit_of_work.handle_batch([delivery(body)])
    reopened = NotificationStore.open(store_settings("notifications.db"))
    NotificationUnitOfWork(reopened).handle_batch([delivery(body, redelivered=True)])
    assert reopened.count() == 1
    assert len(sent_lines(caplog)) == 1
    reopened.close()


def test_count_redelivery(notification_store):
    assert [notification_store.count_redelivery("sha256:x") for _ in range(2)] == [2, 3]


def test_duplicates_count_reservations_of_orders_already_notified(unit_of_work):
    result = inventory_result()
    unit_of_work.handle_batch([delivery(events.encode(result))] * 3)
    assert unit_of_work.duplicates == 2
    unit_of_work.handle_batch([delivery(events.encode(inventory_result(order_id=result.order_id)))])
    assert unit_of_work.duplicates == 3, "another reservation event for a notified order"
    failed = inventory_result(event_type=INVENTORY_FAILED, reason="no")
    unit_of_work.handle_batch([delivery(events.encode(failed))] * 2 + [delivery(b"poison")])
    assert unit_of_work.duplicates == 3, "failures and poison are not duplicates"


def test_duplicates_of_a_rolled_back_batch_are_not_counted(unit_of_work, notification_store,
                                                           monkeypatch):
    notified, fresh = inventory_result(), inventory_result()
    unit_of_work.handle_batch([delivery(events.encode(notified))])
    original = notification_store.record

    def fail_on_the_fresh_one(conn, result, message):
        if result.order_id == fresh.order_id:
            raise sqlite3.OperationalError("disk I/O error")
        return original(conn, result, message)

    monkeypatch.setattr(notification_store, "record", fail_on_the_fresh_one)
    with pytest.raises(sqlite3.OperationalError):
        unit_of_work.handle_batch([delivery(events.encode(notified)), delivery(events.encode(fresh))])
    assert unit_of_work.duplicates == 0


def test_health_reports_the_duplicates(unit_of_work, notification_store):
    body = events.encode(inventory_result())
    unit_of_work.handle_batch([delivery(body), delivery(body)])
    life = Lifecycle(SERVICE, ServiceSettings(), notification_store, topology.INVENTORY_EVENTS,
                     unit_of_work.handle_batch)
    life.loop.consuming = True
    status, health = life.health(own_health(notification_store, unit_of_work))
    assert status == 200
    assert (health["notifications_sent"], health["duplicates"]) == (1, 1)
    assert health["service"] == "notification-service"


def test_what_the_notification_unit_of_work_logs(unit_of_work, caplog):
    caplog.set_level(logging.INFO, logger=UNIT_OF_WORK_LOGGER)
    reserved = inventory_result(item="Pizza", quantity=3, user_id="u7")
    failed = inventory_result(event_type=INVENTORY_FAILED, reason="no stock")
    unit_of_work.handle_batch([delivery(events.encode(reserved)), delivery(events.encode(failed))])
    unit_of_work.handle_batch([delivery(events.encode(reserved))])
    assert [r.getMessage() for r in caplog.records if r.name == UNIT_OF_WORK_LOGGER] == [
        f"Not a reservation, no notification: order_id={failed.order_id} event_id={failed.event_id} "
        "type=InventoryFailed",
        f"Notification sent: order_id={reserved.order_id} event_id={reserved.event_id} user=u7 "
        f"item=Pizza: {notification_for(reserved)}",
        f"Duplicate InventoryReserved detected, skipping: order_id={reserved.order_id} "
        f"event_id={reserved.event_id}",
    ]
