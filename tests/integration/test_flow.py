"""End to end through the real services: the API contract and each order's status transitions."""
from __future__ import annotations

import requests

from tests.client import get_order, post_order, post_orders, statuses, wait_for


def final(base_url: str, order_id: str) -> dict:
    return wait_for(lambda: (o := get_order(base_url, order_id))["status"] != "accepted" and o,
                    what=f"order {order_id} to leave 'accepted'")


def test_spec_order_goes_from_accepted_to_reserved_and_is_notified_once(stack):
    response = requests.post(f"{stack.order_url}/order", timeout=5,
                             json={"user_id": "user123", "item": "Burger", "quantity": 2})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"order_id", "status", "message", "timestamp"}
    assert body["status"] == "accepted"
    assert body["message"] == "Order received and being processed"
    assert body["timestamp"].endswith("Z")

    order = final(stack.order_url, body["order_id"])
    assert order["status"] == "reserved"
    assert "reason" not in order
    assert order["user_id"] == "user123" and order["item"] == "Burger" and order["quantity"] == 2
    assert order["updated_at"] >= order["created_at"]
    wait_for(lambda: f"Notification sent: order_id={body['order_id']}" in stack["notification"].log(),
             what="the notification")
    line = next(text for text in stack["notification"].log().splitlines() if body["order_id"] in text)
    assert "user=user123" in line and "item=Burger" in line


def test_unknown_item_fails_with_a_reason_and_is_never_notified(stack):
    order_id = post_order(stack.order_url, item="Caviar")["order_id"]
    order = final(stack.order_url, order_id)
    assert order["status"] == "failed"
    assert order["reason"] == "unknown item: Caviar"
    wait_for(lambda: stack["inventory"].metrics().labelled("messages_published_total", "exchange")
             == {"inventory": 1}, what="InventoryService's one result to be confirmed")
    assert "Caviar" not in stack["inventory"].metrics().labelled("stock_available", "item")
    notification = stack["notification"].metrics()  # a failure is not even routed to it
    assert notification.value("messages_consumed_total") == 0
    assert notification.value("notifications_sent_total") == 0


def test_insufficient_stock_fails_and_leaves_stock_untouched(make_stack):
    stack = make_stack(INVENTORY_INITIAL_STOCK="5").start()
    first = post_order(stack.order_url, item="Sushi", quantity=4)["order_id"]
    assert final(stack.order_url, first)["status"] == "reserved"
    second = post_order(stack.order_url, item="Sushi", quantity=4)["order_id"]
    order = final(stack.order_url, second)
    assert order["status"] == "failed"
    assert order["reason"].startswith("insufficient stock: 1 Sushi left")
    sushi = next(s for s in requests.get(f"{stack['inventory'].url}/stock", timeout=5).json()["stock"]
                 if s["item"] == "Sushi")
    assert sushi == {"item": "Sushi", "initial": 5, "available": 1, "reserved": 4}


def test_simulated_failure_rate_decides_the_outcome(make_stack):
    stack = make_stack(INVENTORY_SUCCESS_RATE="0.0").start()
    order = final(stack.order_url, post_order(stack.order_url)["order_id"])
    assert order["status"] == "failed"
    assert order["reason"] == "inventory check failed"


def test_order_list_filters_by_status_and_user_newest_first(stack):
    reserved = post_orders(stack.order_url, 3, item="Pizza")
    failed = post_order(stack.order_url, user_id="alice", item="Caviar")["order_id"]
    wait_for(lambda: all(statuses(stack.order_url).get(i) in ("reserved", "failed")
                         for i in [*reserved, failed]), what="all orders final")
    page = requests.get(f"{stack.order_url}/orders", params={"status": "failed"}, timeout=5).json()
    assert page["count"] == 1 and page["orders"][0]["order_id"] == failed
    page = requests.get(f"{stack.order_url}/orders", params={"user_id": "alice"}, timeout=5).json()
    assert [o["order_id"] for o in page["orders"]] == [failed]
    page = requests.get(f"{stack.order_url}/orders", params={"limit": 2}, timeout=5).json()
    assert page["count"] == 4 and len(page["orders"]) == 2
    assert page["orders"][0]["order_id"] == failed, "newest first"


def test_bad_input_gets_a_json_4xx_and_stores_nothing(stack):
    cases = [
        ("not json", {"Content-Type": "application/json"}, 400, "body must be valid JSON"),
        ('{"user_id": "u", "item": "Burger", "quantity": true}', {"Content-Type": "application/json"},
         400, "quantity must be an integer"),
        ('{"user_id": "", "item": "Burger", "quantity": 1}', {"Content-Type": "application/json"},
         400, "user_id must be a non-empty string"),
        ('{"user_id": "u", "item": "Burger", "quantity": 1}', {"Content-Type": "text/plain"},
         415, "Content-Type must be application/json"),
        ("x" * 20_000, {"Content-Type": "application/json"}, 413, None),
    ]
    for body, headers, status, error in cases:
        response = requests.post(f"{stack.order_url}/order", data=body, headers=headers, timeout=5)
        assert response.status_code == status, (body[:40], response.text)
        assert response.headers["Content-Type"] == "application/json"
        if error:
            assert response.json()["error"] == error
    missing = requests.get(f"{stack.order_url}/orders/does-not-exist", timeout=5)
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    assert requests.get(f"{stack.order_url}/orders", timeout=5).json()["count"] == 0
    assert stack["order"].health()[1]["outbox_backlog"] == 0
