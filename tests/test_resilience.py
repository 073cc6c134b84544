"""Resilience: with InventoryService down, orders still get 202 and queue up; nothing is lost after."""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # `python tests/test_resilience.py`, as the spec's README runs it
    import pytest

    sys.exit(pytest.main([__file__, "-v", "--rootdir", str(Path(__file__).resolve().parents[1])]))

from messaging import topology
from tests.client import all_final, post_orders, statuses, wait_for

ORDERS = 40


def test_orders_queue_while_inventory_is_down_and_all_complete_after_restart(stack, broker):
    stack["inventory"].terminate()

    order_ids = post_orders(stack.order_url, ORDERS)

    wait_for(lambda: broker.depth(stack.vhost, topology.ORDER_EVENTS.name) == ORDERS, timeout=20,
             what=f"{ORDERS} OrderPlaced events waiting in order-events")
    assert set(statuses(stack.order_url).values()) == {"accepted"}

    stack["inventory"].start().wait_healthy()

    wait_for(lambda: all_final(stack.order_url, order_ids), timeout=60,
             what="every order to reach a final status")
    assert broker.depth(stack.vhost, topology.ORDER_EVENTS.name) == 0
    assert sorted(statuses(stack.order_url)) == sorted(order_ids)


def test_order_service_answers_202_while_the_broker_vhost_is_unreachable(make_stack, broker):
    """Orders are accepted with no broker at all; the outbox delivers them once it is reachable."""
    stack = make_stack()
    stack["order"].start(RABBITMQ_PORT="1").wait_healthy()  # nothing listens on port 1
    order_ids = post_orders(stack.order_url, 10)
    assert stack["order"].health()[1]["broker"] == "disconnected"
    assert stack["order"].health()[1]["outbox_backlog"] == 10

    stack["order"].terminate()
    stack.start()  # now with the real broker: the relay publishes the backlog
    wait_for(lambda: all_final(stack.order_url, order_ids), timeout=60,
             what="the orders accepted without a broker to complete")
    # Confirmed rows are deleted together, within the relay's DELETE_DELAY of their confirm.
    wait_for(lambda: stack["order"].health()[1]["outbox_backlog"] == 0, timeout=5,
             what="the confirmed outbox rows to be deleted")

