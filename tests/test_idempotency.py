"""Idempotency: the same OrderPlaced delivered many times has exactly one effect, across restarts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":  # `python tests/test_idempotency.py`, as the spec's README runs it
    import pytest

    sys.exit(pytest.main([__file__, "-v", "--rootdir", str(Path(__file__).resolve().parents[1])]))

import requests

from tests.client import drain, order_placed_body, publish, wait_for


def stock_of(inventory, item: str) -> dict:
    levels = requests.get(f"{inventory.url}/stock", timeout=5).json()["stock"]
    return next(level for level in levels if level["item"] == item)


def test_same_event_three_times_and_after_restart_reserves_once(make_stack, broker):
    stack = make_stack().start("inventory")
    with broker.channel(stack.vhost) as channel:
        # Our own probe queue sees every result event InventoryService publishes.
        channel.queue_declare("probe-results", durable=False)
        channel.queue_bind("probe-results", "inventory", "inventory.*")
        before = stock_of(stack["inventory"], "Pizza")["available"]
        event = order_placed_body(item="Pizza", quantity=3)
        for _ in range(3):
            publish(channel, event)
        wait_for(lambda: stack["inventory"].log().count("Duplicate OrderPlaced detected") == 2,
                 what="two duplicates to be skipped")

        stack["inventory"].terminate()
        stack["inventory"].start().wait_healthy()
        publish(channel, event)
        wait_for(lambda: stack["inventory"].log().count("Duplicate OrderPlaced detected") == 3,
                 what="the duplicate after restart to be skipped")

        results = drain(channel, "probe-results")
        assert len(results) == 1, "exactly one result event"
        result = json.loads(results[0][1])
        assert result["event_type"] == "InventoryReserved"
        assert result["order_id"] == event["order_id"]
        assert stock_of(stack["inventory"], "Pizza")["available"] == before - 3
        assert stack["inventory"].log().count("Inventory reserved") == 1


def test_crash_between_commit_and_ack_does_not_reserve_twice(make_stack, broker):
    """kill -9 with unacked messages in hand: redelivery is recognised as a duplicate."""
    stack = make_stack().start("inventory")
    with broker.channel(stack.vhost) as channel:
        channel.queue_declare("probe-results", durable=False)
        channel.queue_bind("probe-results", "inventory", "inventory.*")
        events = [order_placed_body(item="Coffee", quantity=1) for _ in range(200)]
        for event in events:
            publish(channel, event)
        wait_for(lambda: "Inventory reserved" in stack["inventory"].log(), what="processing to start")
        stack["inventory"].kill()
        stack["inventory"].start().wait_healthy()

        wait_for(lambda: stock_of(stack["inventory"], "Coffee")["reserved"] == 200, timeout=30,
                 what="all 200 reservations")
        results = []
        wait_for(lambda: results.extend(drain(channel, "probe-results")) or
                 len({json.loads(b)["order_id"] for _, b in results}) == 200, timeout=10,
                 what="a result for every order")
        ids = [json.loads(body)["event_id"] for _, body in results]
        # A result may be re-published after the crash, but always with the same identity.
        assert len(set(ids)) == 200
        assert stock_of(stack["inventory"], "Coffee")["available"] == \
            stock_of(stack["inventory"], "Coffee")["initial"] - 200


def test_notification_once_even_when_reserved_event_is_redelivered(make_stack, broker):
    stack = make_stack().start("notification")
    reserved = {**order_placed_body(item="Salad"), "event_type": "InventoryReserved"}
    with broker.channel(stack.vhost) as channel:
        for _ in range(3):
            publish(channel, reserved, exchange="inventory", routing_key="inventory.reserved")
        wait_for(lambda: stack["notification"].log().count("Duplicate InventoryReserved") == 2,
                 what="two duplicate notifications skipped")
        stack["notification"].terminate()
        stack["notification"].start().wait_healthy()
        publish(channel, reserved, exchange="inventory", routing_key="inventory.reserved")
        wait_for(lambda: stack["notification"].log().count("Duplicate InventoryReserved") == 3,
                 what="the duplicate after restart skipped")
    assert stack["notification"].log().count(f"Notification sent: order_id={reserved['order_id']}") == 1

