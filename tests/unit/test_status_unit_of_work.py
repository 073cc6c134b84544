"""OrderService's status consumer: a batch of inventory results moves orders to their final status."""
from __future__ import annotations

import logging

from messaging import events
from messaging.events import INVENTORY_FAILED
from order_service import handlers
from order_service.unit_of_work import StatusUnitOfWork
from tests.unit.factories import TIMESTAMP, delivery, inventory_result, payload_of, to_body


def placed(order_store, count: int = 1) -> list[str]:
    ids = []
    for _ in range(count):
        order, message = handlers.place({"user_id": "user123", "item": "Burger", "quantity": 2},
                                        TIMESTAMP)
        order_store.add(order, message)
        ids.append(order.order_id)
    return ids


def body(**overrides) -> bytes:
    return events.encode(inventory_result(**overrides))


def logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "order_service.unit_of_work"]


def test_results_move_their_orders_to_reserved_or_failed(order_store, caplog):
    reserved_id, failed_id = placed(order_store, 2)
    reserved, failed = inventory_result(order_id=reserved_id), inventory_result(
        order_id=failed_id, event_type=INVENTORY_FAILED, reason="insufficient stock")
    with caplog.at_level(logging.INFO):
        rejections = StatusUnitOfWork(order_store).handle_batch(
            [delivery(events.encode(reserved)), delivery(events.encode(failed))])
    assert rejections == []
    assert (order_store.get(reserved_id).status, order_store.get(reserved_id).reason) == ("reserved", None)
    assert (order_store.get(failed_id).status, order_store.get(failed_id).reason) == \
        ("failed", "insufficient stock")
    assert logged(caplog) == [
        f"Order reserved: order_id={reserved_id} event_id={reserved.event_id}",
        f"Order failed: order_id={failed_id} event_id={failed.event_id}",
    ]


def test_a_final_order_is_not_moved_again(order_store, caplog):
    [order_id] = placed(order_store)
    first = inventory_result(order_id=order_id)
    again = inventory_result(order_id=order_id, event_type=INVENTORY_FAILED, reason="late")
    unit_of_work = StatusUnitOfWork(order_store)
    unit_of_work.handle_batch([delivery(events.encode(first))])
    with caplog.at_level(logging.INFO):
        assert unit_of_work.handle_batch([delivery(events.encode(again))]) == []
    assert order_store.get(order_id).status == "reserved"
    assert logged(caplog) == [
        f"Order already final, skipping: order_id={order_id} event_id={again.event_id}"]


def test_a_result_for_an_unknown_order_is_acknowledged_with_a_warning(order_store, caplog):
    result = inventory_result()
    with caplog.at_level(logging.INFO):
        assert StatusUnitOfWork(order_store).handle_batch([delivery(events.encode(result))]) == []
    [record] = [r for r in caplog.records if r.name == "order_service.unit_of_work"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == ("Result for an unknown order, acknowledged: "
                                   f"order_id={result.order_id} event_id={result.event_id}")


def test_poison_is_returned_for_dead_lettering_and_the_rest_applied(order_store):
    [order_id] = placed(order_store)
    payload = payload_of(inventory_result())
    del payload["order_id"]
    poison = delivery(to_body(payload))
    rejections = StatusUnitOfWork(order_store).handle_batch([poison, delivery(body(order_id=order_id))])
    assert [(r.delivery, r.reason) for r in rejections] == [(poison, "invalid-field")]
    assert order_store.get(order_id).status == "reserved"


def test_a_batch_of_poison_only_writes_nothing(order_store, monkeypatch):
    writes: list = []
    monkeypatch.setattr(order_store, "write", lambda job: writes.append(job))
    rejections = StatusUnitOfWork(order_store).handle_batch([delivery(b"not json")])
    assert [r.reason for r in rejections] == ["malformed-json"] and writes == []
