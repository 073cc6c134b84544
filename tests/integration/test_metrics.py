"""GET /metrics on the three real services: the documented names, with exactly the counts the
traffic a test sends must produce; OrderService's totals cover every gunicorn worker."""
from __future__ import annotations

import uuid

import requests

from inventory_service.config import DEFAULTS
from messaging import topology
from messaging.events import utc_now
from stack.processes import Stack
from tests.client import all_final, get_order, order_placed_body, post_order, post_orders, publish, wait_for

INITIAL = DEFAULTS.initial_stock  # of each item


def reserved_copy(order: dict) -> dict:
    """A second InventoryReserved for an order that was reserved already (another event_id)."""
    return {"event_id": str(uuid.uuid4()), "event_type": "InventoryReserved",
            "order_id": order["order_id"], "timestamp": utc_now(), "user_id": order["user_id"],
            "item": order["item"], "quantity": order["quantity"]}


def progress(stack: Stack) -> tuple[float, ...]:
    """What each consumer has acked (order-status, order-events, inventory-events) and both
    outboxes' backlogs."""
    o, i, n = (stack[name].metrics() for name in ("order", "inventory", "notification"))
    return (o.value("messages_consumed_total", queue="order-status"),
            i.value("messages_consumed_total", queue="order-events"),
            n.value("messages_consumed_total", queue="inventory-events"),
            o.value("outbox_pending_messages"), i.value("outbox_pending_messages"))


def wait_for_progress(stack: Stack, expected: tuple[float, ...]) -> None:
    try:
        wait_for(lambda: progress(stack) == expected, timeout=30,
                 what="every consumer to ack what it was sent")
    except AssertionError:
        assert progress(stack) == expected  # shows what is missing
        raise


def test_each_service_counts_orders_failures_duplicates_and_poison_exactly(stack, broker):
    reserved = post_orders(stack.order_url, 3, item="Burger", quantity=2)
    failed = post_order(stack.order_url, item="Caviar")["order_id"]
    wait_for(lambda: all_final(stack.order_url, [*reserved, failed]), what="four final orders")
    scripted = order_placed_body(item="Tacos", quantity=1)  # an order OrderService never saw
    with broker.channel(stack.vhost) as channel:
        publish(channel, scripted)
        publish(channel, scripted)  # the same event again: a duplicate for InventoryService
        publish(channel, reserved_copy(get_order(stack.order_url, reserved[0])),
                exchange=topology.INVENTORY_EXCHANGE, routing_key=topology.INVENTORY_RESERVED_KEY)
        publish(channel, b"{broken")  # poison: dead-lettered
    # order-status: 4 results, the scripted order's (unknown), the copy (duplicate);
    # order-events: 4 orders, the scripted event twice, the poison;
    # inventory-events: 3 reservations, the scripted one's, the copy (duplicate).
    wait_for_progress(stack, (6, 7, 5, 0, 0))
    assert requests.get(f"{stack.order_url}/no-such-route", timeout=5).status_code == 404

    order = stack["order"].metrics()
    assert order.value("orders_placed_total") == 4
    assert order.labelled("orders_completed_total", "status") == {"reserved": 3, "failed": 1}
    assert order.value("order_completion_seconds_count") == 4
    assert 0 < order.value("order_completion_seconds_sum") < 4 * 30
    assert order.labelled("messages_published_total", "exchange") == {"orders": 4}
    assert order.value("publish_confirm_seconds_count") == 4
    assert order.value("messages_publish_refused_total") == 0
    assert order.value("messages_duplicate_total", queue="order-status") == 1
    assert order.value("message_handling_seconds_count", queue="order-status") == 6
    assert order.value("messages_dead_lettered_total") == 0
    assert order.value("outbox_oldest_message_age_seconds") == 0
    assert (order.value("broker_connected"), order.value("broker_reconnects_total")) == (1, 0)
    assert order.value("http_requests_total", method="POST", route="/order", status="202") == 4
    assert order.value("http_request_duration_seconds_count", route="/order") == 4
    assert order.value("http_requests_total", route="/orders/<order_id>", status="200") >= 1
    assert order.value("http_requests_total", route="<unmatched>", status="404") == 1
    routes = set(order.labelled("http_requests_total", "route"))
    assert not any(route.startswith("/orders/") and route != "/orders/<order_id>" for route in routes), \
        f"a raw path became a label: {routes}"

    inventory = stack["inventory"].metrics()
    assert inventory.value("messages_duplicate_total", queue="order-events") == 1
    assert inventory.labelled("messages_dead_lettered_total", "reason") == {"malformed-json": 1}
    assert inventory.value("message_handling_seconds_count", queue="order-events") == 7
    assert inventory.labelled("messages_published_total", "exchange") == {"inventory": 5}
    assert inventory.value("publish_confirm_seconds_count") == 5
    assert inventory.value("stock_available", item="Burger") == INITIAL - 3 * 2
    assert inventory.value("stock_available", item="Tacos") == INITIAL - 1
    assert inventory.value("stock_available", item="Pizza") == INITIAL
    assert (inventory.value("broker_connected"), inventory.value("broker_reconnects_total")) == (1, 0)
    assert inventory.value("http_requests_total", method="GET", route="/health", status="200") >= 1

    notification = stack["notification"].metrics()
    assert notification.value("notifications_sent_total") == 4
    assert notification.value("messages_duplicate_total", queue="inventory-events") == 1
    assert notification.value("message_handling_seconds_count", queue="inventory-events") == 5
    assert notification.value("messages_dead_lettered_total") == 0
    assert notification.value("broker_connected") == 1
    assert "outbox_pending_messages" not in notification.names(), "it has no outbox"


def test_order_service_totals_cover_every_gunicorn_worker(make_stack, tmp_path):
    counts = tmp_path / "multiproc"
    counts.mkdir()
    stack = make_stack(WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(counts)).start("order")
    orders = 40
    post_orders(stack.order_url, orders, clients=16)
    workers = {path.stem.rsplit("_", 1)[1] for path in counts.glob("counter_*.db")}
    assert len(workers) >= 2, f"the orders were counted by one worker only: {sorted(workers)}"
    for _ in range(10):  # each scrape a new connection, answered by either worker
        scraped = stack["order"].metrics()
        assert scraped.value("orders_placed_total") == orders
        assert scraped.value("http_requests_total", method="POST", route="/order") == orders


def test_metrics_off_counts_nothing_and_answers_404(make_stack):
    stack = make_stack(METRICS="off").start()
    order_id = post_order(stack.order_url)["order_id"]
    wait_for(lambda: all_final(stack.order_url, [order_id]), what="the order to complete")
    for name in ("order", "inventory", "notification"):
        response = requests.get(f"{stack[name].url}/metrics", timeout=5)
        assert response.status_code == 404, name
        assert response.json()["error"] == "metrics are off (METRICS=off)"
