"""The real RabbitMQ refuses messages; nothing is lost or doubled, and the system recovers.

Each test makes the broker in its own vhost refuse something through the management API, checks
that the refusal really happened and that the refused messages are kept, removes the cause, and
then checks that every order reached one final status once (the audit, plus a probe queue that
sees every inventory decision):

- a full `order-events` queue (`max-length`, `overflow: reject-publish`) nacks the relay's publishes;
- `order-events` unbound from `orders` makes the relay's mandatory publishes come back unroutable;
- `dlx` refusing dead letters for `order-events-dlq`, by a missing binding (returned) or a full DLQ
  (nacked), leaves poison in `order-events` until the DLQ takes it.
"""
from __future__ import annotations

import collections
import time

import pytest

from messaging import topology
from messaging.amqp import dead_lettering
from stack.broker import Broker
from stack.processes import Stack
from tests.chaos.harness import Figures, OrderStream, ResultProbe, settle_and_audit
from tests.client import all_final, drain, post_orders, publish, statuses, wait_for
from tests.test_dlq import POISON

POLICY = "test-refusal"
ORDER_EVENTS_LIMIT = 5
PARSE_FAILURES = {"malformed-json", "not-an-object", "invalid-field", "unknown-event-type"}


# --- helpers ---

def declare_probe(broker: Broker, vhost: str) -> ResultProbe:
    """The topology, plus a probe queue bound to `inventory` that keeps every result event."""
    with broker.channel(vhost) as channel:
        topology.declare(channel)
    return ResultProbe(broker, vhost)


def wait_connected(stack: Stack, broker: Broker) -> None:
    """Wait until OrderService's relay and status consumer are connected.

    Every connection declares the whole topology, bindings included; a declaration after the
    test removed a binding would quietly put it back. InventoryService and NotificationService
    are healthy only once connected, which `Stack.start` waits for.
    """
    def connected() -> bool:
        answer = stack["order"].health()
        return (answer is not None and answer[1]["broker"] == "connected"
                and broker.consumers(stack.vhost, topology.ORDER_STATUS.name) == 1)

    wait_for(connected, timeout=30, what="OrderService's relay and status consumer to connect")


def outbox_backlog(stack: Stack) -> int:
    answer = stack["order"].health()
    assert answer is not None, "OrderService does not answer /health"
    return answer[1]["outbox_backlog"]


def refused_publishes(stack: Stack, reason: str) -> float:
    """OrderService's publishes to `orders` the broker refused (`nacked` or `unroutable`)."""
    return stack["order"].metrics().value("messages_publish_refused_total",
                                          exchange=topology.ORDERS_EXCHANGE, reason=reason)


def refused_dead_letters(stack: Stack) -> dict[str, float]:
    """reason -> dead letters from order-events the broker refused (the loop put them back)."""
    return stack["inventory"].metrics().labelled("dead_letters_refused_total", "reason")


def queued(broker: Broker, vhost: str, queue: str) -> int | None:
    """Ready plus unacknowledged messages in `queue` (the management API's sample; None before one)."""
    return broker.queue(vhost, queue).get("messages")


def assert_each_order_decided_once(probe: ResultProbe, order_ids: list[str]) -> None:
    """The probe saw results for exactly these orders, one distinct decision (event_id) each."""
    decisions = probe.collect()
    assert set(decisions) == set(order_ids), "a result for every order and for no other"
    doubled = {order: sorted(seen) for order, seen in decisions.items() if len(seen) != 1}
    assert doubled == {}, "more than one inventory decision for an order"


def settle_audit_and_count(stack: Stack, broker: Broker, probe: ResultProbe, order_ids: list[str],
                           scenario: str, since: float) -> None:
    """Every order final, ops.audit clean, work queues and outboxes empty, one decision each."""
    settle_and_audit(stack, broker, order_ids, Figures(scenario=scenario, probe=probe), since,
                     timeout=45)
    # Confirmed rows are deleted together within relay.DELETE_DELAY of their confirm.
    wait_for(lambda: outbox_backlog(stack) == 0, timeout=5, what="the confirmed rows to leave the outbox")
    assert_each_order_decided_once(probe, order_ids)


# --- 1. publishes nacked by a full queue ---

def test_a_full_order_events_queue_nacks_the_relay_and_every_order_completes_once(make_stack, broker):
    stack = make_stack()
    orders = ORDER_EVENTS_LIMIT * 4
    # In place before the services declare the queue, so it is full from the first message on.
    broker.set_policy(stack.vhost, POLICY, "^order-events$",
                      {"max-length": ORDER_EVENTS_LIMIT, "overflow": "reject-publish"})
    try:
        probe = declare_probe(broker, stack.vhost)
        stack.start("order", "notification")  # nobody consumes order-events yet
        wait_connected(stack, broker)
        since = time.monotonic()
        order_ids = post_orders(stack.order_url, orders)

        wait_for(lambda: broker.depth(stack.vhost, "order-events") == ORDER_EVENTS_LIMIT, timeout=20,
                 what=f"order-events to fill up to its limit of {ORDER_EVENTS_LIMIT}")
        refused = orders - ORDER_EVENTS_LIMIT
        wait_for(lambda: outbox_backlog(stack) <= refused, timeout=10,
                 what="the confirmed rows to leave the outbox")
        assert outbox_backlog(stack) == refused, "a nacked row stays in the outbox"
        # Each refused row nacked at least twice: the first publish and a retry a second later.
        wait_for(lambda: refused_publishes(stack, "nacked") >= 2 * refused, timeout=20,
                 what="the broker to nack the overflow, and again when it is re-published")
        assert broker.depth(stack.vhost, "order-events") == ORDER_EVENTS_LIMIT
        assert outbox_backlog(stack) == refused, "a nacked row stays in the outbox"
        assert set(statuses(stack.order_url).values()) == {"accepted"}

        stack.start("inventory")  # the queue drains; the retries find room (the policy stays)
        wait_for(lambda: all_final(stack.order_url, order_ids), timeout=30,
                 what="every order to complete once InventoryService drains order-events")
        settle_audit_and_count(stack, broker, probe, order_ids, "order-events-full", since)
    finally:
        broker.clear_policy(stack.vhost, POLICY)


# --- 2. publishes returned as unroutable ---

def test_unroutable_order_events_stay_in_the_outbox_until_the_binding_is_back(make_stack, broker):
    stack = make_stack().start()
    wait_connected(stack, broker)
    probe = declare_probe(broker, stack.vhost)
    since = time.monotonic()
    stream = OrderStream(stack.order_url, rate=40)

    def assert_stranded(order_ids: list[str]) -> None:
        """Orders published to no queue: still accepted, their events still in the outbox."""
        known = statuses(stack.order_url)
        assert {known[order_id] for order_id in order_ids} == {"accepted"}
        assert outbox_backlog(stack) >= len(order_ids), "returned rows stay in the outbox"

    stream.start()
    try:
        wait_for(lambda: len(stream.accepted) >= 10 and all_final(stack.order_url, stream.accepted[:10]),
                 timeout=20, what="orders to flow before the binding goes")
        broker.unbind(stack.vhost, topology.ORDERS_EXCHANGE, "order-events", topology.ORDER_PLACED_KEY)
        try:
            # The stream posts one order at a time: the one in flight during the unbind may have
            # been published before it, every later one is published to no queue.
            mark = len(stream.accepted) + 1
            wait_for(lambda: len(stream.accepted) >= mark + 20, timeout=20,
                     what="orders to be accepted while order-events is unbound")
            assert_stranded(stream.accepted[mark:])
            # More returns than messages that can have been returned (those accepted since the
            # unbind, the one in flight then, and a few spare): some came back twice.
            wait_for(lambda: refused_publishes(stack, "unroutable")
                     > len(stream.accepted) - mark + 6, timeout=20,
                     what="a message returned as unroutable, re-published and returned again")
            assert_stranded(stream.accepted[mark:])
        finally:
            broker.bind(stack.vhost, topology.ORDERS_EXCHANGE, "order-events", topology.ORDER_PLACED_KEY)
        restored = len(stream.accepted)
        wait_for(lambda: len(stream.accepted) >= restored + 10, timeout=20,
                 what="orders to keep coming after the binding is back")
    finally:
        order_ids = stream.stop()
    assert stream.refused == 0
    settle_audit_and_count(stack, broker, probe, order_ids, "order-events-unbound", since)


# --- 3. dead letters refused by dlx ---

@pytest.mark.parametrize("refusal", ["unroutable", "nacked"])
def test_refused_dead_letters_stay_in_order_events_until_the_dlq_takes_them(make_stack, broker, refusal):
    stack = make_stack()
    dlq = topology.ORDER_EVENTS_DLQ.name
    unbound = False
    if refusal == "nacked":  # a DLQ that takes nothing, from its declaration on
        broker.set_policy(stack.vhost, POLICY, f"^{dlq}$", {"max-length": 0, "overflow": "reject-publish"})
    try:
        stack.start()
        wait_connected(stack, broker)
        probe = declare_probe(broker, stack.vhost)
        if refusal == "unroutable":
            broker.unbind(stack.vhost, topology.DEAD_LETTER_EXCHANGE, dlq, dlq)
            unbound = True
        since = time.monotonic()
        poison = list(POISON.items())
        half = len(poison) // 2
        with broker.channel(stack.vhost) as channel:
            for name, body in poison[:half]:
                publish(channel, body, message_id=name)
        order_ids = post_orders(stack.order_url, 20)
        with broker.channel(stack.vhost) as channel:
            for name, body in poison[half:]:
                publish(channel, body, message_id=name)

        wait_for(lambda: all_final(stack.order_url, order_ids), timeout=30,
                 what="valid orders to complete while the poison's dead letters are refused")
        assert broker.depth(stack.vhost, dlq) == 0
        wait_for(lambda: queued(broker, stack.vhost, "order-events") == len(POISON), timeout=20,
                 what=f"all {len(POISON)} poison messages to be held in order-events (ready or unacked)")
        inventory = stack["inventory"]
        # Every poison message refused at least twice: it was put back and tried again.
        wait_for(lambda: sum(refused_dead_letters(stack).values()) >= 2 * len(POISON), timeout=20,
                 what="the refused poison to be tried again")
        assert set(refused_dead_letters(stack)) == {refusal}, \
            f"the broker refused the dead letters as {refusal}"
        assert stack["inventory"].metrics().value("messages_dead_lettered_total") == 0
        assert broker.depth(stack.vhost, dlq) == 0
        assert inventory.running
    finally:
        broker.clear_policy(stack.vhost, POLICY)
        if unbound:
            broker.bind(stack.vhost, topology.DEAD_LETTER_EXCHANGE, dlq, dlq)

    wait_for(lambda: broker.depth(stack.vhost, dlq) == len(POISON), timeout=20,
             what=f"{len(POISON)} dead letters in {dlq} once it takes them")
    assert stack["inventory"].metrics().value("messages_dead_lettered_total") == len(POISON)
    settle_audit_and_count(stack, broker, probe, order_ids, f"dead-letters-{refusal}", since)
    wait_for(lambda: queued(broker, stack.vhost, "order-events") == 0, timeout=20,
             what="order-events to hold nothing, unacknowledged included")
    with broker.channel(stack.vhost) as channel:
        dead = drain(channel, dlq)
    assert collections.Counter(props.message_id for props, _ in dead) == collections.Counter(set(POISON))
    for props, body in dead:
        assert body == POISON[props.message_id]
        assert props.headers[dead_lettering.REASON] in PARSE_FAILURES
