"""The broker topology: the spec's names, bindings and dead-letter arguments."""
from __future__ import annotations

from messaging import topology


def queue(name: str) -> topology.Queue:
    matches = [q for q in topology.QUEUES if q.name == name]
    assert len(matches) == 1, f"queue {name} declared {len(matches)} times"
    return matches[0]


def test_exchanges_are_the_specs():
    assert set(topology.EXCHANGES) == {"orders", "inventory", "dlx"}
    assert (topology.ORDERS_EXCHANGE, topology.INVENTORY_EXCHANGE,
            topology.DEAD_LETTER_EXCHANGE) == ("orders", "inventory", "dlx")


def test_routing_keys_are_the_specs():
    assert topology.ORDER_PLACED_KEY == "order.placed"
    assert topology.INVENTORY_RESERVED_KEY == "inventory.reserved"
    assert topology.INVENTORY_FAILED_KEY == "inventory.failed"


def test_order_events_queue():
    order_events = queue("order-events")
    assert order_events.bindings == (("orders", "order.placed"),)
    assert order_events.arguments() == {"x-dead-letter-exchange": "dlx",
                                         "x-dead-letter-routing-key": "order-events-dlq"}


def test_inventory_events_queue_takes_only_reservations():
    assert queue("inventory-events").bindings == (("inventory", "inventory.reserved"),)


def test_order_events_dlq():
    dlq = queue("order-events-dlq")
    assert dlq.bindings == (("dlx", "order-events-dlq"),)
    assert dlq.arguments() == {}
    assert topology.dead_letter_queue_for(queue("order-events")) is dlq


def test_every_work_queue_has_a_dead_letter_queue_bound_on_dlx():
    for work in topology.QUEUES:
        if work.dead_letter_key is None:
            continue
        dlq = queue(work.dead_letter_key)
        assert ("dlx", work.dead_letter_key) in dlq.bindings
        assert topology.dead_letter_queue_for(work) is dlq
        assert dlq.dead_letter_key is None, "a DLQ must not dead-letter further"


def test_work_queues_all_dead_letter():
    assert all(q.dead_letter_key for q in topology.WORK_QUEUES)
    assert {q.name for q in topology.DEAD_LETTER_QUEUES} == {
        q.dead_letter_key for q in topology.WORK_QUEUES}


def test_bindings_only_use_declared_exchanges():
    for q in topology.QUEUES:
        for exchange, _key in q.bindings:
            assert exchange in topology.EXCHANGES

