"""The broker baseline: raw pika publish and consume+ack rates in a scratch vhost and queue.

Publish: one pika SelectConnection, persistent messages to a durable queue, publisher confirms,
pipelined with up to `window` unconfirmed messages (the relay's design, without its SQLite).
Consume: one BlockingConnection, prefetch 100, each message acknowledged on its own.
Both are run three times and the median round is reported, as the machine is shared.
"""
from __future__ import annotations

import collections
import json
import sys
import time
import uuid

import pika
import pika.spec

from messaging.events import utc_now
from stack.broker import Broker

QUEUE = "bench-raw"


def sample_body() -> bytes:
    """An OrderPlaced-sized JSON body."""
    return json.dumps({"event_id": str(uuid.uuid4()), "order_id": str(uuid.uuid4()),
                       "timestamp": utc_now(), "user_id": "user17", "item": "Burger",
                       "quantity": 2, "event_type": "OrderPlaced"}).encode()


class _ConfirmedPublisher:
    """Publish `count` messages keeping `window` unconfirmed, on pika's SelectConnection."""

    def __init__(self, parameters: pika.ConnectionParameters, count: int, window: int,
                 queue_type: str = "classic") -> None:
        self.count, self.window, self.body = count, window, sample_body()
        self.arguments = {"x-queue-type": queue_type} if queue_type != "classic" else None
        self.sent = self.acked = self.nacked = 0
        self.started = self.finished = 0.0
        self._pending: collections.deque[int] = collections.deque()
        self._connection = pika.SelectConnection(
            parameters, on_open_callback=lambda c: c.channel(on_open_callback=self._on_channel),
            on_open_error_callback=self._fail, on_close_callback=lambda c, r: c.ioloop.stop())
        self._channel = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self._connection.ioloop.start()
        if self.error is not None:
            raise RuntimeError(f"raw publish failed: {self.error!r}")

    def _fail(self, connection, error: BaseException) -> None:
        self.error = error
        connection.ioloop.stop()

    def _on_channel(self, channel) -> None:
        self._channel = channel
        channel.queue_declare(
            QUEUE, durable=True, arguments=self.arguments,
            callback=lambda _frame: channel.confirm_delivery(
                ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode))

    def _on_confirm_mode(self, _frame) -> None:
        self.started = time.perf_counter()
        self._fill()

    def _fill(self) -> None:
        properties = pika.BasicProperties(content_type="application/json",
                                          delivery_mode=pika.DeliveryMode.Persistent)
        while self.sent < self.count and len(self._pending) < self.window:
            self.sent += 1
            self._pending.append(self.sent)
            self._channel.basic_publish("", QUEUE, self.body, properties)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        settled = 0
        if method.multiple:
            while self._pending and self._pending[0] <= method.delivery_tag:
                self._pending.popleft()
                settled += 1
        elif method.delivery_tag in self._pending:
            self._pending.remove(method.delivery_tag)
            settled = 1
        if isinstance(method, pika.spec.Basic.Ack):
            self.acked += settled
        else:
            self.nacked += settled
        if self.acked + self.nacked >= self.count:
            self.finished = time.perf_counter()
            self._connection.close()
        else:
            self._fill()


def publish_rate(broker: Broker, vhost: str, count: int, window: int = 1000,
                 queue_type: str = "classic") -> dict:
    """Publish `count` persistent messages with pipelined confirms; return the rate."""
    publisher = _ConfirmedPublisher(broker.settings(vhost).parameters(), count, window, queue_type)
    publisher.run()
    seconds = publisher.finished - publisher.started
    return {"client": "pika SelectConnection, confirm_delivery, pipelined", "window": window,
            "queue_type": queue_type,
            "messages": count, "acked": publisher.acked, "nacked": publisher.nacked,
            "body_bytes": len(publisher.body), "seconds": round(seconds, 3),
            "per_s": round(count / seconds, 1), "queue_depth_after": broker.depth(vhost, QUEUE)}


def consume_rate(broker: Broker, vhost: str, count: int, prefetch: int = 100) -> dict:
    """Consume and ack `count` messages one by one with `prefetch`; return the rate."""
    connection = pika.BlockingConnection(broker.settings(vhost).parameters())
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        taken = 0

        def on_message(ch, method, _properties, _body) -> None:
            nonlocal taken
            ch.basic_ack(method.delivery_tag)
            taken += 1
            if taken >= count:
                ch.stop_consuming()

        started = time.perf_counter()
        channel.basic_consume(QUEUE, on_message)
        channel.start_consuming()
        seconds = time.perf_counter() - started
    finally:
        connection.close()
    return {"client": "pika BlockingConnection, basic_consume, one basic_ack per message",
            "prefetch": prefetch, "messages": taken, "seconds": round(seconds, 3),
            "per_s": round(taken / seconds, 1)}


def measure(broker: Broker, vhost: str, count: int, rounds: int = 3,
            queue_type: str = "classic") -> dict:
    """Publish then consume `count` messages `rounds` times; report the median round of each.

    `queue_type` quorum measures a quorum queue (on a cluster: the services' queue type)."""
    publishes, consumes = [], []
    for round_no in range(1, rounds + 1):
        publishes.append(publish_rate(broker, vhost, count, queue_type=queue_type))
        consumes.append(consume_rate(broker, vhost, count))
        print(f"  [raw pika] round {round_no}/{rounds}: publish {publishes[-1]['per_s']}/s, "
              f"consume+ack {consumes[-1]['per_s']}/s", file=sys.stderr, flush=True)
    return {"publish": _median(publishes), "consume": _median(consumes)}


def _median(rounds: list[dict]) -> dict:
    ranked = sorted(rounds, key=lambda r: r["per_s"])
    return {**ranked[len(ranked) // 2], "rounds_per_s": [r["per_s"] for r in rounds],
            "statistic": f"median of {len(rounds)} rounds"}
