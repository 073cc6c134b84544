"""Small HTTP and AMQP helpers the tests share."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pika
import requests

from messaging import topology
from messaging.events import utc_now

FINAL = ("reserved", "failed")


def post_order(base_url: str, user_id: str = "user123", item: str = "Burger",
               quantity: int = 2) -> dict:
    """POST /order and return the 202 body (fails on any other status)."""
    response = requests.post(f"{base_url}/order",
                             json={"user_id": user_id, "item": item, "quantity": quantity}, timeout=10)
    assert response.status_code == 202, (response.status_code, response.text)
    return response.json()


def post_orders(base_url: str, count: int, clients: int = 16, **fields) -> list[str]:
    """POST `count` orders from `clients` concurrent clients; return their order ids."""
    def one(i: int) -> str:
        return post_order(base_url, user_id=f"user{i % 50}", **fields)["order_id"]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, range(count)))


def get_order(base_url: str, order_id: str) -> dict:
    response = requests.get(f"{base_url}/orders/{order_id}", timeout=10)
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def statuses(base_url: str) -> dict[str, str]:
    """order_id -> status for every order, paging through GET /orders with its cursor."""
    found: dict[str, str] = {}
    params: dict[str, int | str] = {"limit": 500}
    while True:
        page = requests.get(f"{base_url}/orders", params=params, timeout=10).json()
        found.update({o["order_id"]: o["status"] for o in page["orders"]})
        if page["next"] is None:
            return found
        params["before"] = page["next"]


def all_final(base_url: str, order_ids: list[str]) -> bool:
    """True when every one of `order_ids` has a final status."""
    known = statuses(base_url)
    return all(known.get(order_id) in FINAL for order_id in order_ids)


def order_placed_body(item: str = "Burger", quantity: int = 1, **overrides) -> dict:
    """A valid OrderPlaced event body, as the spec's scripts publish it."""
    body = {"event_id": str(uuid.uuid4()), "event_type": "OrderPlaced",
            "order_id": str(uuid.uuid4()), "timestamp": utc_now(), "user_id": "user123",
            "item": item, "quantity": quantity}
    body.update(overrides)
    return body


def publish(channel, body: bytes | dict, exchange: str = topology.ORDERS_EXCHANGE,
            routing_key: str = topology.ORDER_PLACED_KEY, **properties) -> None:
    """Publish plain JSON (or raw bytes) persistently, like the spec's scripts do."""
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    channel.basic_publish(exchange, routing_key, payload,
                          pika.BasicProperties(delivery_mode=2, **properties))


def drain(channel, queue: str) -> list[tuple]:
    """Take every message from `queue` (acked): [(properties, body), ...]."""
    messages = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return messages
        messages.append((properties, body))


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
