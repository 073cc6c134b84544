"""The broker topology: the spec's names, bindings and dead-letter arguments."""
from __future__ import annotations

from messaging import topology
from tests.unit.factories import dead_letter_queue_for


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
    assert dead_letter_queue_for(queue("order-events")) is dlq


def test_every_work_queue_has_a_dead_letter_queue_bound_on_dlx():
    for work in topology.QUEUES:
        if work.dead_letter_key is None:
            continue
        dlq = queue(work.dead_letter_key)
        assert ("dlx", work.dead_letter_key) in dlq.bindings
        assert dead_letter_queue_for(work) is dlq
        assert dlq.dead_letter_key is None, "a DLQ must not dead-letter further"


def test_work_queues_all_dead_letter():
    assert all(q.dead_letter_key for q in topology.WORK_QUEUES)
    assert {q.name for q in topology.DEAD_LETTER_QUEUES} == {
        q.dead_letter_key for q in topology.WORK_QUEUES}


def test_bindings_only_use_declared_exchanges():
    for q in topology.QUEUES:
        for exchange, _key in q.bindings:
            assert exchange in topology.EXCHANGES



# --- quorum queues ---

def test_classic_is_the_default_and_the_specs():
    for q in topology.QUEUES:
        assert q.arguments() == q.arguments(topology.CLASSIC)
        assert "x-queue-type" not in q.arguments()
        assert "x-delivery-limit" not in q.arguments()


def test_quorum_work_queues_carry_type_delivery_limit_and_at_least_once_dead_lettering():
    for q in topology.WORK_QUEUES:
        assert q.arguments(topology.QUORUM) == {**q.arguments(), "x-queue-type": "quorum",
                                                "x-delivery-limit": topology.QUORUM_DELIVERY_LIMIT,
                                                "x-dead-letter-strategy": "at-least-once",
                                                "x-overflow": "reject-publish"}


def test_quorum_dead_letter_queues_have_no_delivery_limit():
    # With no DLX of their own, a limit would make the broker drop what an operator reads twice.
    for q in topology.DEAD_LETTER_QUEUES:
        assert q.arguments(topology.QUORUM) == {"x-queue-type": "quorum"}


def test_quorum_delivery_limit_is_the_services_default_redelivery_limit():
    from messaging.settings import ConsumerSettings
    assert ConsumerSettings().redelivery_limit == topology.QUORUM_DELIVERY_LIMIT


# The broker's own words (RabbitMQ 3.10) when a declaration disagrees with the queue it has.
CLASSIC_ASKED_QUORUM = ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                        "'order-events' in vhost 'v': received the value 'quorum' of type "
                        "'longstr' but current is none")
QUORUM_ASKED_CLASSIC = ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                        "'order-events' in vhost 'v': received none but current is the value "
                        "'quorum' of type 'longstr'")


def test_mismatch_names_queue_both_types_and_the_variable():
    line = str(topology.QueueMismatch("order-events", "quorum", CLASSIC_ASKED_QUORUM))
    assert "\n" not in line
    assert "'order-events' is a classic queue" in line
    assert "RABBITMQ_QUEUE_TYPE=quorum asks for a quorum queue" in line
    assert "python -m ops.migrate_queues --to quorum" in line
    back = topology.QueueMismatch("order-events", "classic", QUORUM_ASKED_CLASSIC)
    assert back.existing_type == "quorum"
    assert "is a quorum queue on the broker but RABBITMQ_QUEUE_TYPE=classic" in str(back)


def test_other_mismatches_repeat_the_brokers_words():
    text = ("PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'order-events' "
            "in vhost 'v': received '5' but current is '10'")
    mismatch = topology.QueueMismatch("order-events", "quorum", text)
    assert mismatch.existing_type is None
    assert str(mismatch) == f"RabbitMQ refused to declare queue 'order-events': {text}"


def test_results_are_inventorys_to_send_and_orders_are_orders():
    assert {q.name: q.sender for q in topology.QUEUES} == {
        "order-events": "order", "inventory-events": "inventory", "order-status": "inventory",
        "order-events-dlq": None, "inventory-events-dlq": None, "order-status-dlq": None}


def test_the_parts_together_are_the_whole_topology_and_each_declares_what_it_binds_from():
    parts = topology.PARTS.values()
    assert set().union(*(p.exchanges for p in parts)) == set(topology.EXCHANGES)
    assert sorted(q.name for p in parts for q in p.queues) == sorted(q.name for q in topology.QUEUES), \
        "every queue is declared by exactly one service"
    for part in parts:
        for queue in part.queues:
            assert {exchange for exchange, _ in queue.bindings} <= set(part.exchanges)
            if queue.dead_letter_key:
                assert topology.DEAD_LETTER_EXCHANGE in part.exchanges


def test_each_service_declares_the_queue_it_consumes_and_its_dlq():
    assert {s: [q.name for q in p.queues] for s, p in topology.PARTS.items()} == {
        "order": ["order-status", "order-status-dlq"],
        "inventory": ["order-events", "order-events-dlq"],
        "notification": ["inventory-events", "inventory-events-dlq"]}


def test_each_services_rights_are_exactly_what_its_part_needs():
    assert topology.rights("order") == topology.Rights(
        configure="^(dlx|inventory|order-status|order-status-dlq|orders)$",
        write="^(dlx|order-status|order-status-dlq|orders)$",
        read="^(dlx|inventory|order-status)$",
        topics=(("dlx", "^(order-status-dlq)$"), ("orders", "^(order\\.placed)$")))
    assert topology.rights("inventory") == topology.Rights(
        configure="^(dlx|inventory|order-events|order-events-dlq|orders)$",
        write="^(dlx|inventory|order-events|order-events-dlq)$",
        read="^(dlx|order-events|orders)$",
        topics=(("dlx", "^(order-events-dlq)$"),
                ("inventory", "^(inventory\\.failed|inventory\\.reserved)$")))
    assert topology.rights("notification") == topology.Rights(
        configure="^(dlx|inventory|inventory-events|inventory-events-dlq)$",
        write="^(dlx|inventory-events|inventory-events-dlq)$",
        read="^(dlx|inventory|inventory-events)$",
        topics=(("dlx", "^(inventory-events-dlq)$"),))


def test_only_the_publisher_of_an_exchange_may_write_to_it():
    import re
    for service, exchange in (("order", "orders"), ("inventory", "inventory")):
        for other in topology.PARTS:
            allowed = re.fullmatch(topology.rights(other).write, exchange) is not None
            assert allowed == (other == service), (other, exchange)


def test_the_rights_docs_deployment_states_are_the_rights_granted():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    for service in topology.PARTS:
        [row] = [line for line in text.splitlines()
                 if line.startswith(f"| `{service}_service` |") and "`^(" in line]
        cells = [cell.strip().strip("`").replace("\0", "|")
                 for cell in row.replace("\\|", "\0").split("|")[2:5]]
        expected = topology.rights(service)
        assert cells == [expected.configure, expected.write, expected.read]


def test_ops_identities_requires_every_password_and_defaults_the_names():
    import pytest

    from messaging.settings import ConfigError
    from ops.identities import main, service_users
    env = {f"{s}_SERVICE_RABBITMQ_PASSWORD": "pw" for s in ("ORDER", "INVENTORY", "NOTIFICATION")}
    assert service_users(env) == {"order": ("order_service", "pw"), "inventory": ("inventory_service", "pw"),
                                  "notification": ("notification_service", "pw")}
    del env["INVENTORY_SERVICE_RABBITMQ_PASSWORD"]
    with pytest.raises(ConfigError, match="INVENTORY_SERVICE_RABBITMQ_PASSWORD must be set"):
        service_users(env)
    assert main(env) == 2
