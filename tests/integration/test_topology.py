"""The broker topology: the spec's names and arguments, declared by whichever service starts first."""
from __future__ import annotations

import pika
import pika.exceptions
import pytest

from inventory_service.config import DEFAULTS
from messaging import topology
from tests.client import all_final, order_placed_body, post_order, publish, wait_for


@pytest.mark.parametrize("first", ["order", "inventory", "notification"])
def test_any_service_alone_declares_the_whole_topology(make_stack, broker, first):
    stack = make_stack().start(first)
    if first == "order":  # its /health is 200 before the broker is reached: orders are accepted anyway
        wait_for(lambda: stack["order"].health()[1]["broker"] == "connected", what="the relay to connect")
    with broker.channel(stack.vhost) as channel:
        for exchange in ("orders", "inventory", "dlx"):
            channel.exchange_declare(exchange, "topic", durable=True, passive=True)
        for queue in topology.QUEUES:
            # Re-declaring with the same arguments succeeds only if they match exactly.
            channel.queue_declare(queue.name, durable=True, arguments=queue.arguments())
    with broker.channel(stack.vhost) as channel, pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare("order-events", durable=True)  # without the DLX args: mismatch


# The spec's queues and their arguments, written out here rather than taken from messaging.topology.
SPEC_QUEUES = {
    "order-events": {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "order-events-dlq"},
    "inventory-events": {"x-dead-letter-exchange": "dlx",
                         "x-dead-letter-routing-key": "inventory-events-dlq"},
    "order-status": {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "order-status-dlq"},
    "order-events-dlq": {},
    "inventory-events-dlq": {},
    "order-status-dlq": {},
}


def test_queue_arguments_follow_the_spec(make_stack, broker):
    stack = make_stack().start("inventory")
    for name, arguments in SPEC_QUEUES.items():
        queue = broker.queue(stack.vhost, name)
        assert (queue["durable"], queue["auto_delete"], queue["exclusive"]) == (True, False, False), name
        assert queue["arguments"] == arguments, name

    # The broker refuses a declaration that disagrees with the queue it has, and keeps its own.
    for durable, arguments in [
        (True, {**SPEC_QUEUES["order-events"], "x-dead-letter-routing-key": "elsewhere"}),
        (True, {}),
        (False, SPEC_QUEUES["order-events"]),
    ]:
        with broker.channel(stack.vhost) as channel, \
                pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare("order-events", durable=durable, arguments=arguments)
        assert refused.value.reply_code == 406, refused.value  # PRECONDITION_FAILED
    queue = broker.queue(stack.vhost, "order-events")
    assert (queue["durable"], queue["arguments"]) == (True, SPEC_QUEUES["order-events"])


def test_spec_scripts_redeclare_orders_exchange_and_publish_plain_json(stack, broker):
    """The spec's scripts declare `orders` as a durable topic exchange and publish bare JSON."""
    connection = pika.BlockingConnection(broker.settings(stack.vhost).parameters())
    channel = connection.channel()
    channel.exchange_declare(exchange="orders", exchange_type="topic", durable=True)
    event = order_placed_body(item="Tacos")
    publish(channel, event)
    connection.close()
    tacos = DEFAULTS.initial_stock - event["quantity"]
    wait_for(lambda: stack["inventory"].metrics().value("stock_available", item="Tacos") == tacos,
             what="the script's event to be reserved")
    wait_for(lambda: stack["notification"].metrics().value("notifications_sent_total") == 1,
             what="its notification")
    # OrderService does not know that order: it acknowledges it, never retries it forever.
    wait_for(lambda: stack["order"].metrics().value("messages_consumed_total", queue="order-status")
             == 1, what="OrderService to acknowledge the result for an order it does not know")
    order = stack["order"].metrics()
    assert order.value("orders_completed_total") == 0
    assert order.value("messages_dead_lettered_total") == 0
    assert broker.depth(stack.vhost, "order-status") == 0


def test_services_started_in_reverse_order_lose_nothing(make_stack):
    stack = make_stack()
    stack.start("order")
    order_id = post_order(stack.order_url)["order_id"]
    stack.start("notification")
    stack.start("inventory")
    wait_for(lambda: all_final(stack.order_url, [order_id]), what="the early order to complete")
