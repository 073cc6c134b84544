"""InventoryService's store and batch handler with a real temporary SQLite file (no broker)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from inventory_service.__main__ import SERVICE, own_health
from inventory_service.store import InventoryStore
from inventory_service.unit_of_work import InventoryUnitOfWork
from messaging import events, topology
from messaging.amqp.delivery import Rejection
from messaging.db import outbox
from messaging.events import parse_inventory_result
from messaging.service import Lifecycle
from messaging.settings import ServiceSettings
from tests.unit.factories import delivery, order_placed, payload_of, to_body


class Wakes:
    """The relay's interface (`claimant`, `hand_over`), counting hand-overs."""

    owner = "test-relay"

    def __init__(self) -> None:
        self.count = 0
        self.rows: list = []

    def claimant(self) -> str:
        return self.owner

    def hand_over(self, rows: list) -> None:
        self.count += 1
        self.rows.extend(rows)


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def unit_of_work(inventory_store: InventoryStore, wakes: Wakes) -> InventoryUnitOfWork:
    return InventoryUnitOfWork(inventory_store, 1.0, wakes)


def levels(store: InventoryStore) -> dict[str, dict]:
    return {row["item"]: row for row in store.stock_levels()}


def available(store: InventoryStore, item: str = "Burger") -> int:
    return levels(store)[item]["available"]


def published(store: InventoryStore) -> list:
    """Every result waiting in the outbox, oldest first (claims released, then re-claimed)."""
    outbox.release_all(store.conn)
    return [p.message for p in outbox.claim(store.conn, "test", 1000, -1.0)]


def placed(event) -> bytes:
    return events.encode(event)


def test_seeded_stock_levels(inventory_store):
    assert levels(inventory_store) == {
        "Burger": {"item": "Burger", "initial": 10, "available": 10, "reserved": 0},
        "Pizza": {"item": "Pizza", "initial": 5, "available": 5, "reserved": 0},
    }


def test_seed_does_not_reset_existing_stock(inventory_store, unit_of_work):
    unit_of_work.handle_batch([delivery(placed(order_placed(quantity=3)))])
    inventory_store.seed(("Burger", "burger", "Sushi"), 1000)
    assert levels(inventory_store)["Burger"] == {"item": "Burger", "initial": 10, "available": 7,
                                                 "reserved": 3}
    assert levels(inventory_store)["Sushi"]["available"] == 1000
    assert len(levels(inventory_store)) == 3


def test_valid_event_reserves_once_and_writes_one_outbox_row(inventory_store, unit_of_work, wakes):
    event = order_placed(quantity=3)
    assert unit_of_work.handle_batch([delivery(placed(event))]) == []
    assert available(inventory_store) == 7
    assert inventory_store.outcomes() == {event.order_id: "reserved"}
    [message] = published(inventory_store)
    assert (message.exchange, message.routing_key) == ("inventory", "inventory.reserved")
    result = parse_inventory_result(message.body)
    assert (result.event_type, result.order_id, result.quantity) == (
        "InventoryReserved", event.order_id, 3)
    assert wakes.count == 1
    assert [row.message for row in wakes.rows] == [message], "handed to the relay in memory"


def test_same_event_three_times_in_one_batch_reserves_once(inventory_store, unit_of_work):
    body = placed(order_placed(quantity=2))
    assert unit_of_work.handle_batch([delivery(body), delivery(body), delivery(body)]) == []
    assert available(inventory_store) == 8
    assert inventory_store.outbox_backlog() == 1


def test_same_event_across_batches_reserves_once(inventory_store, unit_of_work):
    body = placed(order_placed(quantity=2))
    for _ in range(3):
        assert unit_of_work.handle_batch([delivery(body, redelivered=True)]) == []
    assert available(inventory_store) == 8
    assert inventory_store.outbox_backlog() == 1
    assert levels(inventory_store)["Burger"]["reserved"] == 2


def test_new_event_id_for_the_same_order_does_not_reserve_again(inventory_store, unit_of_work):
    first = order_placed(quantity=2)
    second = order_placed(order_id=first.order_id, quantity=2)
    unit_of_work.handle_batch([delivery(placed(first))])
    unit_of_work.handle_batch([delivery(placed(second))])
    unit_of_work.handle_batch([delivery(placed(order_placed(order_id=first.order_id)))] * 2)
    assert available(inventory_store) == 8
    assert inventory_store.outbox_backlog() == 1


def test_stock_is_taken_in_order_within_a_batch(inventory_store, unit_of_work):
    batch = [delivery(placed(order_placed(quantity=4))) for _ in range(3)]
    unit_of_work.handle_batch(batch)
    assert available(inventory_store) == 2
    results = [parse_inventory_result(m.body) for m in published(inventory_store)]
    assert [r.event_type for r in results] == ["InventoryReserved", "InventoryReserved",
                                               "InventoryFailed"]
    assert results[2].reason == "insufficient stock: 2 Burger left, 4 requested"


@pytest.mark.parametrize("body, reason", [
    (b"not json", "malformed-json"),
    (b"\xff\xfe{}", "malformed-json"),
    (b"[1, 2, 3]", "not-an-object"),
    (b"null", "not-an-object"),
    (to_body({"event_type": "Bogus"}), "unknown-event-type"),
    (to_body({**payload_of(order_placed()), "quantity": 0}), "invalid-field"),
    (to_body({**payload_of(order_placed()), "event_id": "nope"}), "invalid-field"),
])
def test_poison_is_rejected_with_its_reason_and_changes_nothing(inventory_store, unit_of_work,
                                                                wakes, body, reason):
    bad = delivery(body)
    [rejection] = unit_of_work.handle_batch([bad])
    assert isinstance(rejection, Rejection)
    assert rejection.delivery is bad
    assert rejection.reason == reason
    assert rejection.error
    assert available(inventory_store) == 10
    assert inventory_store.outcomes() == {}
    assert inventory_store.outbox_backlog() == 0
    assert wakes.count == 0, "nothing was published, so the relay need not wake"


def test_poison_in_a_batch_does_not_stop_the_good_ones(inventory_store, unit_of_work, wakes):
    good = order_placed(quantity=1)
    bad = delivery(b"{oops")
    rejections = unit_of_work.handle_batch([bad, delivery(placed(good))])
    assert [(r.delivery, r.reason) for r in rejections] == [(bad, "malformed-json")]
    assert inventory_store.outcomes() == {good.order_id: "reserved"}
    assert wakes.count == 1


def test_item_matches_case_insensitively(inventory_store, unit_of_work):
    event = order_placed(item="burger", quantity=4)
    unit_of_work.handle_batch([delivery(placed(event))])
    assert available(inventory_store) == 6
    assert levels(inventory_store)["Burger"]["reserved"] == 4
    [message] = published(inventory_store)
    assert message.routing_key == "inventory.reserved"


def test_insufficient_stock_fails_without_taking_stock(inventory_store, unit_of_work):
    event = order_placed(item="Pizza", quantity=6)
    unit_of_work.handle_batch([delivery(placed(event))])
    assert available(inventory_store, "Pizza") == 5
    assert inventory_store.outcomes() == {event.order_id: "failed"}
    [message] = published(inventory_store)
    assert message.routing_key == "inventory.failed"
    assert parse_inventory_result(message.body).reason == (
        "insufficient stock: 5 Pizza left, 6 requested")


def test_exact_stock_is_reserved(inventory_store, unit_of_work):
    unit_of_work.handle_batch([delivery(placed(order_placed(item="Pizza", quantity=5)))])
    assert levels(inventory_store)["Pizza"] == {"item": "Pizza", "initial": 5, "available": 0,
                                                "reserved": 5}


def test_unknown_item_fails(inventory_store, unit_of_work):
    event = order_placed(item="Caviar")
    unit_of_work.handle_batch([delivery(placed(event))])
    assert inventory_store.outcomes() == {event.order_id: "failed"}
    assert parse_inventory_result(published(inventory_store)[0].body).reason == (
        "unknown item: Caviar")
    assert set(levels(inventory_store)) == {"Burger", "Pizza"}


def test_success_rate_zero_fails_without_taking_stock(inventory_store, wakes):
    unit_of_work = InventoryUnitOfWork(inventory_store, 0.0, wakes)
    event = order_placed(quantity=1)
    unit_of_work.handle_batch([delivery(placed(event))])
    assert available(inventory_store) == 10
    assert inventory_store.outcomes() == {event.order_id: "failed"}
    assert parse_inventory_result(published(inventory_store)[0].body).reason == (
        "inventory check failed")


def test_stock_levels_stay_consistent(inventory_store, unit_of_work):
    batch = [delivery(placed(order_placed(item=item, quantity=q)))
             for item, q in [("Burger", 3), ("burger", 2), ("Pizza", 9), ("Pizza", 4),
                             ("Caviar", 1)]]
    unit_of_work.handle_batch(batch)
    for row in inventory_store.stock_levels():
        assert row["initial"] - row["available"] == row["reserved"], row
    assert levels(inventory_store)["Burger"]["reserved"] == 5
    assert levels(inventory_store)["Pizza"]["reserved"] == 4


def test_stock_levels_are_plain_json_integers(inventory_store, unit_of_work):
    """GET /stock serialises them as they are (a PostgreSQL SUM would be a Decimal)."""
    unit_of_work.handle_batch([delivery(placed(order_placed(item="Burger", quantity=3)))])
    [burger, pizza] = json.loads(json.dumps(inventory_store.stock_levels()))
    assert burger == {"item": "Burger", "initial": 10, "available": 7, "reserved": 3}
    assert pizza == {"item": "Pizza", "initial": 5, "available": 5, "reserved": 0}


def test_a_failed_batch_changes_nothing(inventory_store, unit_of_work, monkeypatch):
    def explode(*_args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(inventory_store, "record", explode)
    with pytest.raises(RuntimeError):
        unit_of_work.handle_batch([delivery(placed(order_placed()))])
    monkeypatch.undo()
    assert available(inventory_store) == 10
    assert inventory_store.outbox_backlog() == 0
    event = order_placed()
    unit_of_work.handle_batch([delivery(placed(event))])
    assert inventory_store.outcomes() == {event.order_id: "reserved"}


def test_count_redelivery_is_durable(inventory_store, store_settings):
    assert inventory_store.count_redelivery("id:abc") == 2
    assert inventory_store.count_redelivery("id:abc") == 3
    reopened = InventoryStore.open(store_settings("inventory.db"))
    assert reopened.count_redelivery("id:abc") == 4
    reopened.close()


def test_state_survives_reopening_the_store(inventory_store, unit_of_work, store_settings, wakes):
    event = order_placed(quantity=1)
    unit_of_work.handle_batch([delivery(placed(event))])
    reopened = InventoryStore.open(store_settings("inventory.db"))
    InventoryUnitOfWork(reopened, 1.0, wakes).handle_batch([delivery(placed(event))])
    assert available(reopened) == 9
    assert reopened.outbox_backlog() == 1
    reopened.close()


def test_duplicates_are_counted_once_per_skipped_event(inventory_store, unit_of_work):
    event = order_placed(quantity=1)
    unit_of_work.handle_batch([delivery(placed(event))] * 3)
    assert unit_of_work.duplicates == 2, "two copies in the batch of the first"
    unit_of_work.handle_batch([delivery(placed(event), redelivered=True)])
    assert unit_of_work.duplicates == 3, "a redelivery after the commit"
    unit_of_work.handle_batch([delivery(placed(order_placed(order_id=event.order_id)))])
    assert unit_of_work.duplicates == 4, "another event for an order already decided"
    unit_of_work.handle_batch([delivery(placed(order_placed())), delivery(b"{poison")])
    assert unit_of_work.duplicates == 4, "neither a new event nor poison is a duplicate"


def test_duplicates_of_a_rolled_back_batch_are_not_counted(inventory_store, unit_of_work, monkeypatch):
    event = order_placed(quantity=1)
    unit_of_work.handle_batch([delivery(placed(event))])
    monkeypatch.setattr(inventory_store, "record", lambda *_args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        unit_of_work.handle_batch([delivery(placed(event)), delivery(placed(order_placed()))])
    assert unit_of_work.duplicates == 0


def test_health_reports_the_duplicates(inventory_store, unit_of_work):
    unit_of_work.handle_batch([delivery(placed(order_placed()))] * 2)
    life = Lifecycle(SERVICE, ServiceSettings(), inventory_store, topology.ORDER_EVENTS,
                     unit_of_work.handle_batch, SimpleNamespace(connected=True))
    life.loop.consuming, life.loop.processed = True, 2
    status, body = life.health(own_health(unit_of_work))
    assert status == 200
    assert body["duplicates"] == 1
    assert body["processed"] == 2
    assert (body["service"], body["outbox_backlog"]) == ("inventory-service", 1)


def test_a_duplicate_does_not_stop_the_rest_of_its_batch(inventory_store, unit_of_work):
    first = order_placed(quantity=1)
    unit_of_work.handle_batch([delivery(placed(first))])
    later = order_placed(quantity=2)
    unit_of_work.handle_batch([delivery(placed(first)), delivery(placed(later))])
    assert available(inventory_store) == 7
    assert inventory_store.outbox_backlog() == 2


def test_two_event_ids_for_one_order_in_one_batch_reserve_once(inventory_store, unit_of_work):
    first = order_placed(quantity=2)
    second = order_placed(order_id=first.order_id, quantity=2)
    unit_of_work.handle_batch([delivery(placed(first)), delivery(placed(second))])
    assert available(inventory_store) == 8
    assert inventory_store.outbox_backlog() == 1


def test_results_are_born_claimed_by_the_relay_and_handed_to_it(inventory_store, unit_of_work, wakes):
    unit_of_work.handle_batch([delivery(placed(order_placed()))])
    claims = inventory_store.conn.execute("SELECT claimed_by FROM outbox").fetchall()
    assert [row[0] for row in claims] == [wakes.owner]
    assert len(wakes.rows) == 1


def test_while_the_relay_is_disconnected_results_wait_unclaimed_in_the_outbox(inventory_store, wakes):
    wakes.claimant = lambda: None
    InventoryUnitOfWork(inventory_store, 1.0, wakes).handle_batch([delivery(placed(order_placed()))])
    claims = inventory_store.conn.execute("SELECT claimed_by FROM outbox").fetchall()
    assert [row[0] for row in claims] == [None]
    assert wakes.count == 1 and wakes.rows == [], "the relay is told to read the outbox, not given rows"


def test_what_the_inventory_unit_of_work_logs(inventory_store, unit_of_work, caplog):
    import logging
    reserved = order_placed(quantity=2)
    failed = order_placed(item="Pizza", quantity=50)
    with caplog.at_level(logging.INFO, logger="inventory_service.unit_of_work"):
        unit_of_work.handle_batch([delivery(placed(reserved)), delivery(placed(failed)),
                               delivery(placed(reserved))])
    assert [r.getMessage() for r in caplog.records if r.name == "inventory_service.unit_of_work"] == [
        f"Inventory reserved: order_id={reserved.order_id} event_id={reserved.event_id} item=Burger "
        "quantity=2",
        f"Inventory failed: order_id={failed.order_id} event_id={failed.event_id} item=Pizza "
        "reason=insufficient stock: 5 Pizza left, 50 requested",
        f"Duplicate OrderPlaced detected, skipping: order_id={reserved.order_id} "
        f"event_id={reserved.event_id}",
    ]
