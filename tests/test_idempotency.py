"""Idempotency: the same OrderPlaced delivered many times has exactly one effect, across restarts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":  # `python tests/test_idempotency.py`, as the spec's README runs it
    import pytest

    sys.exit(pytest.main([__file__, "-v", "--rootdir", str(Path(__file__).resolve().parents[1])]))

import pytest
import requests

from tests.chaos.harness import memory_alarm
from tests.client import drain, order_placed_body, publish, wait_for
from tests.integration.test_dead_letter_tool import lock
from tests.test_dlq import POISON

pytestmark = pytest.mark.private_broker  # raises the memory alarm: on a broker of its own


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


def reserved_units(inventory, item: str) -> int | None:
    """Units of `item` reserved so far, or None while the service does not answer yet."""
    try:
        return stock_of(inventory, item)["reserved"]
    except requests.RequestException:
        return None


def test_crash_between_commit_and_ack_does_not_reserve_twice(make_stack, broker):
    """kill -9 after the commit and before the ack: every order is redelivered and skipped.

    The consume loop commits a batch, then dead-letters the batch's poison with a confirmed publish,
    then acks the batch. A batch of orders ending in one poison message, handled while the broker's
    memory alarm blocks that publish, holds the service between its commit and its ack.

    So that all the orders are in that one batch, the service is first held on a batch of its own:
    a sentinel order whose commit finds the database locked and is retried (with no delay, reading
    the socket between tries) while the orders and the poison arrive. Released, the sentinel is
    committed, and the next batch is everything that arrived meanwhile. The sentinel's ack is
    still owed (a message handled alone has its ack wait up to ACK_DELAY for the next ones', and
    the next batch is stuck in its dead letter), so it comes back too: one more duplicate.
    """
    count = 20
    stack = make_stack("sqlite", RABBITMQ_BLOCKED_TIMEOUT="600", TRANSIENT_RETRY_LIMIT="100",
                       TRANSIENT_RETRY_DELAY="0", SQLITE_BUSY_TIMEOUT_MS="300").start("inventory")
    inventory = stack["inventory"]

    def retries() -> int:
        return inventory.log().count("transient failure")

    events = [order_placed_body(item="Coffee", quantity=1) for _ in range(count)]
    holder = lock(inventory.data_dir / "inventory.db")
    try:
        with broker.channel(stack.vhost) as channel:
            channel.queue_declare("probe-results", durable=False)
            channel.queue_bind("probe-results", "inventory", "inventory.*")
            publish(channel, order_placed_body(item="Burger"), message_id="sentinel")
            wait_for(retries, what="the sentinel's batch to wait for the database")
            for event in events:
                publish(channel, event)
            publish(channel, POISON["malformed-json"], message_id="poison")
        wait_for(lambda: broker.depth(stack.vhost, "order-events") == 0,
                 what="every message to be delivered to the service")
        delivered = retries()
        wait_for(lambda: retries() >= delivered + 2, what="a retry to read them off the socket")
        with memory_alarm(broker):
            holder.rollback()
            wait_for(lambda: reserved_units(inventory, "Coffee") == count, timeout=30,
                     what=f"all {count} reservations to be committed")
            inventory.kill()
    finally:
        if holder.in_transaction:
            holder.rollback()
        holder.close()
    # The broker reads the dead connection once the alarm is gone and requeues what it held.
    wait_for(lambda: broker.depth(stack.vhost, "order-events"), timeout=30,
             what="the unacknowledged batch to return to order-events")
    assert broker.depth(stack.vhost, "order-events") == count + 2, \
        "the whole batch, orders and poison, and the sentinel were unacknowledged when the service died"

    inventory.start().wait_healthy()
    wait_for(lambda: inventory.health()[1]["processed"] >= count + 2, timeout=30,
             what="the redelivered batch to be settled")
    assert inventory.health()[1]["duplicates"] == count + 1, "each redelivered order is a duplicate"
    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") >= 1, timeout=30,
             what="the poison to be dead-lettered")

    coffee = stock_of(inventory, "Coffee")
    assert coffee["reserved"] == count
    assert coffee["available"] == coffee["initial"] - count, "stock taken once per order"
    by_order: dict[str, set[str]] = {}
    with broker.channel(stack.vhost) as channel:
        def every_order_answered() -> bool:
            for _, body in drain(channel, "probe-results"):
                result = json.loads(body)
                by_order.setdefault(result["order_id"], set()).add(result["event_id"])
            return all(event["order_id"] in by_order for event in events)

        wait_for(every_order_answered, timeout=30, what="a result for every order")
    # A result may be published again after the crash, but always with the same identity.
    assert all(len(ids) == 1 for ids in by_order.values()), f"one result per order: {by_order}"


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

