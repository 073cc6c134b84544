"""Reservation decisions and the result events they produce: pure functions, no I/O."""
from __future__ import annotations

import json
import uuid

import pytest

from inventory_service import handlers
from inventory_service.handlers import Decision, decide, passes_check, reserve, result_for, result_message
from messaging.events import INVENTORY_FAILED, INVENTORY_RESERVED, parse_inventory_result
from tests.unit.factories import TIMESTAMP, order_placed


def synthetic_order_ids(count: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"order/{n}")) for n in range(count)]


def test_unknown_item_fails():
    decision = decide(order_placed(item="Caviar"), None, 1.0)
    assert decision == Decision(False, "unknown item: Caviar")


def test_insufficient_stock_fails_and_says_how_much_is_left():
    decision = decide(order_placed(item="Burger", quantity=5), 4, 1.0)
    assert decision.reserved is False
    assert decision.reason == "insufficient stock: 4 Burger left, 5 requested"


def test_zero_stock_fails():
    assert decide(order_placed(quantity=1), 0, 1.0).reserved is False


def test_exact_stock_succeeds():
    assert decide(order_placed(quantity=5), 5, 1.0) == Decision(True, None)


def test_stock_checks_come_before_the_simulated_check():
    assert decide(order_placed(item="Caviar"), None, 0.0).reason == "unknown item: Caviar"
    assert decide(order_placed(quantity=3), 2, 0.0).reason.startswith("insufficient stock")


def test_success_rate_zero_always_fails():
    for order_id in synthetic_order_ids(500):
        decision = decide(order_placed(order_id=order_id), 100, 0.0)
        assert decision == Decision(False, "inventory check failed")


def test_success_rate_one_always_succeeds():
    for order_id in synthetic_order_ids(500):
        assert decide(order_placed(order_id=order_id), 100, 1.0).reserved


def test_success_rate_point_nine_is_roughly_ninety_percent():
    ids = synthetic_order_ids(2000)
    passed = sum(passes_check(order_id, 0.9) for order_id in ids)
    assert 0.87 <= passed / len(ids) <= 0.93, passed


def test_success_rate_half_is_roughly_half():
    ids = synthetic_order_ids(2000)
    passed = sum(passes_check(order_id, 0.5) for order_id in ids)
    assert 0.46 <= passed / len(ids) <= 0.54, passed


def test_check_is_deterministic_per_order_id():
    ids = synthetic_order_ids(200)
    first = [passes_check(order_id, 0.5) for order_id in ids]
    assert [passes_check(order_id, 0.5) for order_id in ids] == first
    assert any(first) and not all(first)
    event = order_placed(order_id=ids[0])
    assert decide(event, 100, 0.5) == decide(order_placed(order_id=ids[0]), 100, 0.5)


def test_check_is_monotonic_in_the_success_rate():
    for order_id in synthetic_order_ids(300):
        if passes_check(order_id, 0.3):
            assert passes_check(order_id, 0.8)


def test_result_for_reserved():
    event = order_placed()
    result = result_for(event, Decision(True), TIMESTAMP)
    assert result.event_type == INVENTORY_RESERVED
    assert result.reserved
    assert result.reason is None
    assert (result.order_id, result.user_id, result.item, result.quantity, result.timestamp) == (
        event.order_id, event.user_id, event.item, event.quantity, TIMESTAMP)


def test_result_for_failed_carries_the_reason():
    result = result_for(order_placed(), Decision(False, "unknown item: Caviar"), TIMESTAMP)
    assert result.event_type == INVENTORY_FAILED
    assert result.reason == "unknown item: Caviar"


def test_result_event_id_is_deterministic_for_the_same_order_placed():
    event = order_placed()
    first = result_for(event, Decision(True), TIMESTAMP)
    again = result_for(event, Decision(True), "2030-01-01T00:00:00Z")
    assert first.event_id == again.event_id
    assert uuid.UUID(first.event_id).version == 5
    assert first.event_id != event.event_id


def test_result_event_id_differs_for_different_events():
    one, two = order_placed(), order_placed()
    ids = {result_for(e, Decision(True), TIMESTAMP).event_id for e in (one, two)}
    assert len(ids) == 2
    same_order = order_placed(order_id=one.order_id)
    assert (result_for(same_order, Decision(True), TIMESTAMP).event_id
            != result_for(one, Decision(True), TIMESTAMP).event_id)


@pytest.mark.parametrize("decision, key", [(Decision(True), "inventory.reserved"),
                                           (Decision(False, "nope"), "inventory.failed")])
def test_result_message_routing(decision, key):
    result = result_for(order_placed(), decision, TIMESTAMP)
    message = result_message(result)
    assert message.exchange == "inventory"
    assert message.routing_key == key
    assert message.message_id == result.event_id
    assert message.correlation_id == result.order_id
    assert message.type == result.event_type
    assert parse_inventory_result(message.body) == result


def test_reserved_message_body_has_the_spec_fields_and_no_reason():
    result = result_for(order_placed(), Decision(True), TIMESTAMP)
    assert set(json.loads(result_message(result).body)) == {
        "event_id", "event_type", "order_id", "timestamp", "user_id", "item", "quantity"}


def test_namespace_is_stable():
    # Changing it would give re-published results new ids, defeating downstream dedup.
    assert uuid.UUID("5f1d3c1e-8a4b-4f43-9a51-3f0c2e7d9b10") == handlers.RESULT_NAMESPACE


# --- reserve: a batch decided against the stock as the batch leaves it ---

def batch_of(*events) -> tuple[list, set[str]]:
    """The events and their ids, all fresh."""
    return list(events), {event.event_id for event in events}


def kinds(outcomes) -> list[str]:
    return [o.result.event_type for o in outcomes]


def test_reserve_takes_the_stock_as_the_batch_leaves_it():
    placed, fresh = batch_of(*(order_placed(quantity=q) for q in (2, 2, 1, 1)))
    outcomes, _ = reserve(placed, fresh, set(), {"burger": ("Burger", 4)}, 1.0, TIMESTAMP)
    assert kinds(outcomes) == [INVENTORY_RESERVED, INVENTORY_RESERVED, INVENTORY_FAILED,
                               INVENTORY_FAILED]
    assert outcomes[2].result.reason == "insufficient stock: 0 Burger left, 1 requested"
    assert [o.event for o in outcomes] == placed, "one outcome per event, in delivery order"


def test_a_failed_reservation_takes_no_stock():
    placed, fresh = batch_of(order_placed(quantity=5), order_placed(quantity=3))
    outcomes, _ = reserve(placed, fresh, set(), {"burger": ("Burger", 4)}, 1.0, TIMESTAMP)
    assert kinds(outcomes) == [INVENTORY_FAILED, INVENTORY_RESERVED]


def test_reserve_finds_the_item_whatever_its_case_and_names_it_as_the_menu_does():
    placed, fresh = batch_of(order_placed(item="bURGER", quantity=1), order_placed(item="Caviar"))
    outcomes, _ = reserve(placed, fresh, set(), {"burger": ("Burger", 1)}, 1.0, TIMESTAMP)
    assert [(o.item, o.result.event_type) for o in outcomes] == [
        ("Burger", INVENTORY_RESERVED), ("Caviar", INVENTORY_FAILED)]
    assert outcomes[1].result.reason == "unknown item: Caviar"


def test_an_event_seen_before_the_batch_is_a_duplicate():
    seen, new = order_placed(), order_placed()
    outcomes, lines = reserve([seen, new], {new.event_id}, set(), {"burger": ("Burger", 9)}, 1.0,
                              TIMESTAMP)
    assert [o.event for o in outcomes] == [new]
    assert lines[0] == (seen, ("Duplicate OrderPlaced detected, skipping: order_id=%s event_id=%s",
                               seen.order_id, seen.event_id))


def test_an_event_for_an_order_decided_before_is_a_duplicate():
    placed, fresh = batch_of(order_placed(), order_placed())
    outcomes, lines = reserve(placed, fresh, {placed[0].order_id}, {"burger": ("Burger", 9)}, 1.0,
                              TIMESTAMP)
    assert [o.event for o in outcomes] == [placed[1]]
    assert lines[0][1][0].startswith("Duplicate OrderPlaced detected")


def test_a_second_copy_in_the_same_batch_is_a_duplicate():
    first = order_placed(quantity=1)
    same_id = order_placed(event_id=first.event_id, quantity=1)  # the id is what the inbox marks
    outcomes, lines = reserve([first, first, same_id], {first.event_id}, set(),
                              {"burger": ("Burger", 9)}, 1.0, TIMESTAMP)
    assert [o.event for o in outcomes] == [first]
    assert [line[1][0].split(":")[0] for line in lines] == [
        "Inventory reserved", "Duplicate OrderPlaced detected, skipping",
        "Duplicate OrderPlaced detected, skipping"]


def test_a_second_event_for_one_order_in_the_same_batch_is_a_duplicate():
    first = order_placed(quantity=1)
    again = order_placed(order_id=first.order_id, quantity=1)
    placed, fresh = batch_of(first, again)
    outcomes, _ = reserve(placed, fresh, set(), {"burger": ("Burger", 9)}, 1.0, TIMESTAMP)
    assert [o.event for o in outcomes] == [first]


def test_reserve_logs_each_event_in_delivery_order_and_changes_no_argument():
    ok, short = order_placed(quantity=2, item="burger"), order_placed(quantity=9)
    placed, fresh = batch_of(ok, short)
    decided, stock = set(), {"burger": ("Burger", 3)}
    outcomes, lines = reserve(placed, fresh, decided, stock, 1.0, TIMESTAMP)
    assert lines == [
        (ok, ("Inventory reserved: order_id=%s event_id=%s item=%s quantity=%d",
              ok.order_id, ok.event_id, "Burger", 2)),
        (short, ("Inventory failed: order_id=%s event_id=%s item=%s reason=%s", short.order_id,
                 short.event_id, "Burger", "insufficient stock: 1 Burger left, 9 requested"))]
    assert outcomes[0].result.timestamp == TIMESTAMP
    assert (fresh, decided, stock) == ({ok.event_id, short.event_id}, set(),
                                       {"burger": ("Burger", 3)})


def test_reserve_applies_the_simulated_check():
    placed, fresh = batch_of(order_placed())
    outcomes, _ = reserve(placed, fresh, set(), {"burger": ("Burger", 9)}, 0.0, TIMESTAMP)
    assert outcomes[0].result.reason == "inventory check failed"
