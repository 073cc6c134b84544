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
    log = stack["notification"].log()
    assert log.count("Notification sent") == ORDERS  # success rate 1.0 in tests
    assert len({line.split("order_id=")[1].split()[0] for line in log.splitlines()
                if "Notification sent" in line}) == ORDERS
