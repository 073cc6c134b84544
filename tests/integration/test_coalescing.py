"""The relay's connection hands the socket one write per ioloop pass, and the broker gets it all, in order."""
from __future__ import annotations

import pika
import pytest

from messaging.amqp.connection import CoalescingSelectConnection
from stack.broker import Broker

MESSAGES = 300


def publish_in_one_pass(connection_class: type[pika.SelectConnection],
                        parameters: pika.ConnectionParameters, queue: str) -> dict[str, int]:
    """Publish MESSAGES persistent messages from one ioloop callback; count transport writes."""
    seen = {"writes": 0, "acked": 0}

    def on_open(connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel) -> None:
        channel.queue_declare(queue, durable=True,
                              callback=lambda _: channel.confirm_delivery(on_confirm, on_confirm_mode))

        def on_confirm_mode(_frame) -> None:
            transport = channel.connection._transport
            write = transport.write

            def counted(data: bytes) -> None:
                seen["writes"] += 1
                write(data)

            transport.write = counted
            for n in range(MESSAGES):
                channel.basic_publish("", queue, str(n).encode(),
                                      pika.BasicProperties(delivery_mode=2))

    def on_confirm(frame) -> None:
        seen["acked"] = max(seen["acked"], frame.method.delivery_tag)
        if seen["acked"] == MESSAGES:
            connection.close()

    connection = connection_class(parameters, on_open_callback=on_open,
                                  on_open_error_callback=lambda c, e: c.ioloop.stop(),
                                  on_close_callback=lambda c, r: c.ioloop.stop())
    connection.ioloop.call_later(30, connection.ioloop.stop)  # a deadline, should the broker not answer
    connection.ioloop.start()
    return seen


def drain(broker: Broker, vhost: str, queue: str) -> list[int]:
    bodies = []
    with broker.channel(vhost) as channel:
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(int(body))


@pytest.mark.parametrize("connection_class, most_writes", [
    (CoalescingSelectConnection, 3),  # publishes, then at most the close handshake
    pytest.param(pika.SelectConnection, None, id="plain-pika-control"),
])
def test_publishes_from_one_pass_reach_the_socket_as_one_write(broker, vhost, connection_class,
                                                               most_writes):
    seen = publish_in_one_pass(connection_class, broker.settings(vhost).parameters(), "probe")
    assert seen["acked"] == MESSAGES
    if most_writes is None:  # pika alone writes each frame on its own: method, header, body
        assert seen["writes"] >= 3 * MESSAGES
    else:
        assert seen["writes"] <= most_writes
    assert drain(broker, vhost, "probe") == list(range(MESSAGES))
