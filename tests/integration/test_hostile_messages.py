"""Hostile messages: header values pika cannot decode or re-encode, sent as raw frames, and bodies
over MAX_MESSAGE_BYTES. Each is dead-lettered; none wedges a service or costs it unbounded memory.

Other clients (Java, .NET, Go) can publish header values pika cannot decode (a timestamp past the
year 9999, a NaN double, a field type it does not know) or decodes into something it cannot write
back (a double of 1e300 becomes an int of 301 digits). Each is published here ahead of valid
orders, as its bytes go on the wire; the orders behind it must all become final. RabbitMQ itself
refuses a NaN or infinite double and an unknown field type with a channel error, so those never
reach a consumer; tests/unit/test_header_values.py covers them.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pika
import pytest
import requests

from messaging import topology
from messaging.amqp import dead_lettering
from tests.amqp_frames import RawProperties, array, double, field, properties_bytes, table, timestamp
from tests.client import all_final, drain, order_placed_body, post_orders, wait_for
from tests.integration.test_dead_letter_tool import dlq

VALID = json.dumps(order_placed_body()).encode()
PAST_9999 = timestamp(2**63 + 5)
CASES = {  # name: (header table, body, what the dead letter's headers hold for it)
    "timestamp-past-9999": (
        table(field(b"sent-at", b"T", PAST_9999)), VALID,
        {"sent-at": f"unreadable timestamp 0x{PAST_9999.hex()}"}),
    "timestamp-in-an-array": (
        table(field(b"seen", b"A", array(b"I" + struct.pack(">i", 1), b"T" + PAST_9999))), VALID,
        {"seen": [1, f"unreadable timestamp 0x{PAST_9999.hex()}"]}),
    "timestamp-in-a-nested-table": (
        table(field(b"ok", b"t", b"\x01"), field(b"meta", b"F", table(field(b"at", b"T", PAST_9999)))),
        b"{not json", {"ok": True, "meta": {"at": f"unreadable timestamp 0x{PAST_9999.hex()}"}}),
}
HUGE_DOUBLE = (table(field(b"weight", b"d", double(1e300))), b"{not json",
               {"weight": str(int(1e300))})


def dead_lettered(stack, reason: str) -> float:
    """What InventoryService has counted as dead-lettered from order-events for `reason`."""
    return stack["inventory"].metrics().value("messages_dead_lettered_total", queue="order-events",
                                              reason=reason)


def publish_raw(channel, name: str, headers: bytes, body: bytes) -> None:
    channel.basic_publish(topology.ORDERS_EXCHANGE, topology.ORDER_PLACED_KEY, body,
                          RawProperties(properties_bytes(headers, name.encode())))


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_undecodable_and_unwritable_headers_are_dead_lettered_and_orders_flow(make_stack, broker,
                                                                              queue_type):
    stack = make_stack(RABBITMQ_QUEUE_TYPE=queue_type).start()
    cases = {**CASES, "double-1e300-poison": HUGE_DOUBLE}
    with broker.channel(stack.vhost) as channel:
        for name, (headers, body, _) in cases.items():
            publish_raw(channel, name, headers, body)
    order_ids = post_orders(stack.order_url, 10)

    wait_for(lambda: all_final(stack.order_url, order_ids), timeout=30,
             what="the orders behind the hostile messages to become final")
    try:
        wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == len(cases), timeout=20,
                 what=f"{len(cases)} dead letters")
    except AssertionError as timeout:  # say what was there instead, and what the consumer said
        raise AssertionError(f"{timeout}: order-events-dlq holds "
                             f"{broker.depth(stack.vhost, 'order-events-dlq')}, order-events "
                             f"{broker.depth(stack.vhost, 'order-events')}; InventoryService's log "
                             f"ends:\n{stack['inventory'].log()[-4000:]}") from None
    assert broker.depth(stack.vhost, "order-events") == 0
    with broker.channel(stack.vhost) as channel:
        dead = {props.message_id: (props, body) for props, body in drain(channel, "order-events-dlq")}
    assert set(dead) == set(cases), "exactly the hostile messages, each once"
    for name, (_, body, rewritten) in cases.items():
        props, dead_body = dead[name]
        assert dead_body == body, name
        for header, value in rewritten.items():
            assert props.headers[header] == value, (name, header)
        expected = "malformed-json" if name == "double-1e300-poison" else "undecodable-properties"
        assert props.headers[dead_lettering.REASON] == expected, name
        assert props.headers[dead_lettering.REWRITTEN] == [h for h, v in rewritten.items()
                                                           if v is not True], name
    # A dead letter is in its queue a moment before its confirm reaches the service and is counted.
    wait_for(lambda: dead_lettered(stack, "undecodable-properties") == len(CASES)
             and dead_lettered(stack, "malformed-json") == 1, timeout=10, what="the dead letters counted")
    assert stack["inventory"].metrics().value("broker_reconnects_total") == 0, \
        "the consumer never lost its connection"
    assert stack["inventory"].running


def test_an_undecodable_order_replayed_from_the_dlq_is_handled_with_its_text_headers(stack, broker):
    name, (headers, body, _) = "timestamp-past-9999", CASES["timestamp-past-9999"]
    with broker.channel(stack.vhost) as channel:
        publish_raw(channel, name, headers, body)
    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == 1, timeout=20, what="the dead letter")
    before = stock(stack)["Burger"]

    result = dlq(stack.vhost, "replay", name)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: stock(stack)["Burger"] == before - 1, timeout=20,
             what="the replayed order to reserve its Burger")
    assert broker.depth(stack.vhost, "order-events-dlq") == 0, "handled, not dead-lettered again"
    assert stack["inventory"].metrics().value("broker_reconnects_total") == 0


def stock(stack) -> dict[str, int]:
    """Available units by item, as InventoryService's /stock tells them."""
    levels = requests.get(f"{stack['inventory'].url}/stock", timeout=5).json()["stock"]
    return {level["item"]: level["available"] for level in levels}


def memory_kib(service, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak) of a service process, in KiB."""
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {service.name}")


def test_a_20_mib_event_is_dead_lettered_unparsed_and_the_orders_behind_it_flow(stack, broker):
    inventory = stack["inventory"]
    baseline = memory_kib(inventory, "VmRSS")
    body = json.dumps(order_placed_body(padding="x" * (20 << 20))).encode()  # valid, but 20 MiB
    with broker.channel(stack.vhost) as channel:
        channel.basic_publish(topology.ORDERS_EXCHANGE, topology.ORDER_PLACED_KEY, body,
                              pika.BasicProperties(delivery_mode=2, message_id="huge"))
    order_ids = post_orders(stack.order_url, 10)

    wait_for(lambda: all_final(stack.order_url, order_ids), timeout=30, what="the orders behind it")
    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == 1, timeout=20, what="the dead letter")
    with broker.channel(stack.vhost) as channel:
        [(props, dead_body)] = drain(channel, "order-events-dlq")
    assert dead_body == body, "kept whole"
    assert props.headers[dead_lettering.REASON] == "too-large"
    assert props.headers[dead_lettering.ERROR] == \
        f"a body of {len(body)} bytes, over MAX_MESSAGE_BYTES (1048576)"
    wait_for(lambda: dead_lettered(stack, "too-large") == 1, timeout=10, what="the dead letter counted")
    assert inventory.metrics().value("broker_reconnects_total") == 0
    # At its peak the service holds the body as pika assembled it and as the dead letter sends it;
    # parsing it as well (what happened before MAX_MESSAGE_BYTES) took about 60 MiB.
    grown_mib = (memory_kib(inventory, "VmHWM") - baseline) / 1024
    assert grown_mib < 50, f"at its peak the service held {grown_mib:.0f} MiB more for one 20 MiB message"
