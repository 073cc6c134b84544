"""Dead letters: poison messages end in the DLQ with their story; valid traffic keeps flowing."""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":  # `python tests/test_dlq.py`, as the spec's README runs it
    import pytest

    sys.exit(pytest.main([__file__, "-v", "--rootdir", str(Path(__file__).resolve().parents[1])]))

import pytest

from messaging import topology
from messaging.amqp import dead_lettering
from tests.client import all_final, drain, order_placed_body, post_orders, publish, wait_for

POISON = {
    "malformed-json": b"{not json",
    "empty-body": b"",
    "invalid-utf8": b"\xff\xfe\x00garbage",
    "json-array": b"[1, 2, 3]",
    "json-string": b'"OrderPlaced"',
    "json-null": b"null",
    "missing-fields": json.dumps({"event_type": "OrderPlaced"}).encode(),
    "unknown-event-type": json.dumps(order_placed_body(event_type="OrderCancelled")).encode(),
    "quantity-string": json.dumps(order_placed_body(quantity="2")).encode(),
    "quantity-bool": json.dumps(order_placed_body(quantity=True)).encode(),
    "quantity-zero": json.dumps(order_placed_body(quantity=0)).encode(),
    "quantity-huge": json.dumps(order_placed_body(quantity=10**12)).encode(),
    "bad-order-id": json.dumps(order_placed_body(order_id="not-a-uuid")).encode(),
    "bad-timestamp": json.dumps(order_placed_body(timestamp="yesterday")).encode(),
    "item-too-long": json.dumps(order_placed_body(item="B" * 10_000)).encode(),
}


def test_poison_messages_land_in_dlq_with_their_story_and_valid_orders_flow(stack, broker):
    with broker.channel(stack.vhost) as channel:
        for name, body in POISON.items():
            publish(channel, body, message_id=name)
    order_ids = post_orders(stack.order_url, 20)

    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == len(POISON), timeout=30,
             what=f"{len(POISON)} dead letters in order-events-dlq")
    wait_for(lambda: all_final(stack.order_url, order_ids), timeout=30,
             what="valid orders to complete despite the poison")
    assert broker.depth(stack.vhost, "order-events") == 0

    with broker.channel(stack.vhost) as channel:
        dead = {props.message_id: (props, body) for props, body in drain(channel, "order-events-dlq")}
    assert set(dead) == set(POISON)
    for name, (props, body) in dead.items():
        assert body == POISON[name], "the original body is kept byte for byte"
        headers = props.headers
        assert headers[dead_lettering.ORIGINAL_EXCHANGE] == "orders"
        assert headers[dead_lettering.ORIGINAL_ROUTING_KEY] == "order.placed"
        assert headers[dead_lettering.QUEUE] == "order-events"
        assert headers[dead_lettering.SERVICE] == "inventory-service"
        assert headers[dead_lettering.REASON] in (
            "malformed-json", "not-an-object", "invalid-field", "unknown-event-type")
        assert headers[dead_lettering.ERROR]
        assert headers[dead_lettering.ATTEMPTS] == 1
    assert dead["malformed-json"][0].headers[dead_lettering.REASON] == "malformed-json"
    assert dead["json-array"][0].headers[dead_lettering.REASON] == "not-an-object"
    assert dead["unknown-event-type"][0].headers[dead_lettering.REASON] == "unknown-event-type"
    assert stack["inventory"].running, "poison never takes the service down"


@pytest.mark.parametrize("queue", ["inventory-events-dlq", "order-status-dlq"])
def test_poison_on_the_inventory_exchange_is_dead_lettered_by_each_consumer(stack, broker, queue):
    with broker.channel(stack.vhost) as channel:
        publish(channel, b"definitely not json", exchange=topology.INVENTORY_EXCHANGE,
                routing_key=topology.INVENTORY_RESERVED_KEY, message_id="bad-result")
    wait_for(lambda: broker.depth(stack.vhost, queue) == 1, timeout=20, what=f"a dead letter in {queue}")
    with broker.channel(stack.vhost) as channel:
        [(props, body)] = drain(channel, queue)
    assert body == b"definitely not json"
    assert props.headers[dead_lettering.REASON] == "malformed-json"
    assert props.headers[dead_lettering.ORIGINAL_EXCHANGE] == "inventory"

