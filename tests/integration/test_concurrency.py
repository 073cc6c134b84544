"""Many concurrent clients: every 202 becomes a stored order that reaches a final status."""
from __future__ import annotations

from tests.client import all_final, post_orders, statuses, wait_for

CLIENTS, ORDERS = 32, 600


def test_no_order_lost_under_concurrent_clients(stack):
    order_ids = post_orders(stack.order_url, ORDERS, clients=CLIENTS)
    assert len(set(order_ids)) == ORDERS
    wait_for(lambda: all_final(stack.order_url, order_ids), timeout=90,
             what=f"all {ORDERS} orders to reach a final status")
    assert sorted(statuses(stack.order_url)) == sorted(order_ids)
    wait_for(lambda: stack["order"].health()[1]["outbox_backlog"] == 0, timeout=5,
             what="the confirmed outbox rows to be deleted")
    # Success rate 1.0 in tests: one notification per order (a second one for an order would be
    # a duplicate, not a notification: one row per order_id), nothing dead-lettered.
    notification = stack["notification"].metrics()
    assert notification.value("notifications_sent_total") == ORDERS
    assert notification.value("messages_duplicate_total") == 0
    order = stack["order"].metrics()
    assert order.value("orders_placed_total") == ORDERS
    assert order.labelled("orders_completed_total", "status") == {"reserved": ORDERS, "failed": 0}
    for name in ("order", "inventory", "notification"):
        assert stack[name].metrics().value("messages_dead_lettered_total") == 0, name
