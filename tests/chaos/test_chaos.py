"""The chaos suite: each scenario streams orders, injects a fault, settles, and audits.

Zero orders lost and zero effects doubled in every scenario.
"""
from __future__ import annotations

import threading
import time

import pytest

from messaging import topology
from tests.chaos.harness import (
    OrderStream,
    broker_stopped,
    memory_alarm,
    notifications_per_order,
    settle_and_audit,
)
from tests.client import post_orders, publish, wait_for
from tests.test_dlq import POISON

pytestmark = [pytest.mark.chaos, pytest.mark.private_broker]  # stops the broker


def processed_some(stack, count: int = 20) -> bool:
    """InventoryService has settled `count` OrderPlaced events since it (re)started."""
    return stack["inventory"].metrics().value("messages_consumed_total",
                                              queue=topology.ORDER_EVENTS.name) >= count


def test_broker_stops_and_starts_while_orders_are_posted(stack, broker, figures):
    stream = OrderStream(stack.order_url)
    stream.start()
    wait_for(lambda: processed_some(stack), what="traffic to flow")
    with broker_stopped(broker):
        wait_for(lambda: stack["inventory"].health()[0] == 503, what="inventory to report 503")
        assert stack["order"].health()[0] == 200, "OrderService still takes orders"
        time.sleep(1.0)  # keep the broker down while the stream goes on (the fault's duration)
    recovered_from = time.monotonic()
    for name in ("order", "inventory", "notification"):
        stack[name].wait_healthy(timeout=60)
    accepted = stream.stop()
    assert stream.refused == 0, "no POST failed because of the broker"
    settle_and_audit(stack, broker, accepted, figures, since=recovered_from)
    assert all(stack[name].running for name in ("order", "inventory", "notification"))


def test_broker_down_while_orders_are_posted_then_back(stack, broker, figures):
    with broker_stopped(broker):
        wait_for(lambda: stack["order"].health()[1]["broker"] == "disconnected",
                 what="OrderService to notice the broker is gone")
        accepted = post_orders(stack.order_url, 100, clients=8)
        assert stack["order"].health()[1]["outbox_backlog"] == 100
    settle_and_audit(stack, broker, accepted, figures, since=time.monotonic())


def test_kill_9_inventory_mid_stream(stack, broker, figures):
    stream = OrderStream(stack.order_url, rate=60)
    stream.start()
    wait_for(lambda: processed_some(stack, 40), what="traffic to flow")
    stack["inventory"].kill()
    time.sleep(0.5)  # orders keep arriving while InventoryService is dead
    stack["inventory"].start().wait_healthy()
    restarted = time.monotonic()
    accepted = stream.stop()
    settle_and_audit(stack, broker, accepted, figures, since=restarted)


def test_kill_9_order_service_after_202s_while_broker_down(stack, broker, figures):
    with broker_stopped(broker):
        wait_for(lambda: stack["order"].health()[1]["broker"] == "disconnected",
                 what="OrderService to notice the broker is gone")
        accepted = post_orders(stack.order_url, 60, clients=8)
        stack["order"].kill()
    stack["order"].start().wait_healthy()
    settle_and_audit(stack, broker, accepted, figures, since=time.monotonic())


def test_kill_9_notification_mid_stream(stack, broker, figures):
    stream = OrderStream(stack.order_url, rate=60)
    stream.start()
    wait_for(lambda: stack["notification"].metrics().value("notifications_sent_total") >= 30,
             what="notifications to flow")
    stack["notification"].kill()
    time.sleep(0.5)
    stack["notification"].start().wait_healthy()
    restarted = time.monotonic()
    accepted = stream.stop()
    settle_and_audit(stack, broker, accepted, figures, since=restarted)


class Duplicator(threading.Thread):
    """Deliver every event three times: copy each one twice more straight into its queues."""

    ROUTES = {"order.placed": ("order-events",),
              "inventory.reserved": ("inventory-events", "order-status"),
              "inventory.failed": ("order-status",)}

    def __init__(self, broker, vhost: str) -> None:
        super().__init__(daemon=True)
        self.broker, self.vhost, self.copied = broker, vhost, 0
        self._halt = threading.Event()
        with broker.channel(vhost) as channel:
            channel.queue_declare("chaos-duplicator", durable=False)
            channel.queue_bind("chaos-duplicator", "orders", "order.placed")
            channel.queue_bind("chaos-duplicator", "inventory", "inventory.*")

    def run(self) -> None:
        with self.broker.channel(self.vhost) as channel:
            for method, properties, body in channel.consume("chaos-duplicator", inactivity_timeout=0.1):
                if method is not None:
                    for queue in self.ROUTES[method.routing_key]:
                        for _ in range(2):
                            publish(channel, body, exchange="", routing_key=queue,
                                    message_id=properties.message_id)
                    channel.basic_ack(method.delivery_tag)
                    self.copied += 1
                elif self._halt.is_set():
                    break
            channel.cancel()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def test_duplicate_storm(stack, broker, figures):
    duplicator = Duplicator(broker, stack.vhost)
    duplicator.start()
    started = time.monotonic()
    accepted = post_orders(stack.order_url, 100, clients=8)
    settle_and_audit(stack, broker, accepted, figures, since=started)
    wait_for(lambda: duplicator.copied >= 200, what="every event and result to be copied")
    duplicator.stop()

    def skipped() -> tuple[int, int]:
        return (stack["inventory"].health()[1]["duplicates"],
                stack["notification"].health()[1]["duplicates"])

    # Each OrderPlaced and each InventoryReserved arrived three times: two duplicates of each.
    wait_for(lambda: min(skipped()) >= 200, timeout=30,
             what="InventoryService and NotificationService to skip every copy")
    assert skipped() == (200, 200), f"(inventory, notification) duplicates skipped: {skipped()}"
    assert stack["notification"].health()[1]["notifications_sent"] == 100
    assert notifications_per_order(stack) == {order_id: 1 for order_id in accepted}
    figures.notes["duplicates_skipped"] = sum(skipped())


def test_poison_mixed_into_valid_traffic(stack, broker, figures):
    stream = OrderStream(stack.order_url, rate=60)
    stream.start()
    with broker.channel(stack.vhost) as channel:
        for round_ in range(3):
            for name, body in POISON.items():
                publish(channel, body, message_id=f"{name}-{round_}")
                publish(channel, body, exchange=topology.INVENTORY_EXCHANGE,
                        routing_key=topology.INVENTORY_RESERVED_KEY, message_id=f"{name}-{round_}")
            time.sleep(0.3)  # spread the poison through the stream
    started = time.monotonic()
    accepted = stream.stop()
    settle_and_audit(stack, broker, accepted, figures, since=started)
    expected = 3 * len(POISON)
    for queue in ("order-events-dlq", "inventory-events-dlq", "order-status-dlq"):
        wait_for(lambda q=queue: broker.depth(stack.vhost, q) == expected,
                 what=f"{expected} dead letters in {queue}")
    assert all(stack[name].running for name in ("order", "inventory", "notification"))


# What each service logs when it stops in good order (OrderService's status consumer stops
# inside a gunicorn worker; the consumer services stop as a whole).
LAST_WORDS = {"order": "stopped consuming order-status", "inventory": "inventory-service stopped",
              "notification": "notification-service stopped"}


@pytest.mark.parametrize("victim", ["order", "inventory", "notification"])
def test_sigterm_under_load(stack, broker, figures, victim):
    stream = OrderStream(stack.order_url, rate=60)
    stream.start()
    wait_for(lambda: processed_some(stack, 30), what="traffic to flow")
    began = time.monotonic()
    code = stack[victim].terminate(timeout=30)
    figures.notes["shutdown_seconds"] = round(time.monotonic() - began, 2)
    assert code == 0, f"{victim} exited {code} on SIGTERM:\n{stack[victim].tail()}"
    assert LAST_WORDS[victim] in stack[victim].log(), stack[victim].tail()
    stack[victim].start().wait_healthy()
    restarted = time.monotonic()
    accepted = stream.stop()
    settle_and_audit(stack, broker, accepted, figures, since=restarted)


def test_memory_alarm_blocks_publishers_then_clears(make_stack, broker, figures):
    stack = make_stack(RABBITMQ_BLOCKED_TIMEOUT="3").start()
    stream = OrderStream(stack.order_url, rate=40)
    stream.start()
    wait_for(lambda: processed_some(stack, 20), what="traffic to flow")
    with memory_alarm(broker):
        wait_for(lambda: stack["order"].health()[1]["outbox_backlog"] > 20, timeout=30,
                 what="the outbox to grow while publishers are blocked")
    cleared = time.monotonic()
    accepted = stream.stop()
    assert stream.refused == 0
    settle_and_audit(stack, broker, accepted, figures, since=cleared)

