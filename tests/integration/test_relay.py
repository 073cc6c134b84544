"""The outbox relay publishes every committed event exactly once in the normal course of things."""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import requests

from messaging import topology
from tests.client import wait_for


def post_until_accepted(base_url: str) -> str:
    """POST an order, retrying while the server is still starting."""
    def attempt():
        try:
            response = requests.post(f"{base_url}/order", timeout=5,
                                     json={"user_id": "u", "item": "Burger", "quantity": 1})
            return response.status_code == 202 and response.json()["order_id"]
        except requests.ConnectionError:
            return None
    return wait_for(attempt, timeout=30, interval=0.01, what="OrderService to accept an order")


def test_orders_posted_while_the_relays_connect_are_published_once(make_stack, broker):
    """Rows written before a relay is connected are claimed by exactly one relay, once confirms are on."""
    stack = make_stack()
    with broker.channel(stack.vhost) as channel:
        topology.declare(channel)
        channel.queue_declare("probe")
        channel.queue_bind("probe", topology.ORDERS_EXCHANGE, topology.ORDER_PLACED_KEY)
    posted: list[str] = []
    for _ in range(5):  # each start races the relays' connect against the first orders
        stack["order"].start()
        with ThreadPoolExecutor(8) as pool:
            posted += list(pool.map(lambda _: post_until_accepted(stack.order_url), range(40)))
        wait_for(lambda: stack["order"].health()[1]["outbox_backlog"] == 0, what="the outbox to empty")
        assert stack["order"].terminate() == 0
    published: collections.Counter[str] = collections.Counter()
    with broker.channel(stack.vhost) as channel:
        while True:
            method, properties, _ = channel.basic_get("probe", auto_ack=True)
            if method is None:
                break
            published[properties.correlation_id] += 1
    assert set(published) == set(posted)
    assert [order for order, n in published.items() if n > 1] == []
