"""Connecting to RabbitMQ: capped exponential backoff, stoppable, topology declared on every connect."""
from __future__ import annotations

import logging
import random
import threading

import pika
import pika.exceptions

from messaging import topology
from messaging.settings import BrokerSettings

logger = logging.getLogger(__name__)

# Errors after which a fresh connection may succeed.
CONNECTION_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)


class Backoff:
    """Capped exponential delays with jitter: 0.1 s, 0.2 s, ... up to `cap`."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.attempt = first, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class CoalescingSelectConnection(pika.SelectConnection):
    """A SelectConnection that hands the socket what one pass of its ioloop wrote in one piece.

    pika buffers every frame on its own (a publish is three: method, header, body) and sends the
    buffers one `send()` each, so a relay publishing 100 messages makes 300 system calls and as
    many TCP segments for the broker to read. Here the frames written during one pass of the
    ioloop are joined and given to the transport as one write on the next pass, in order.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._unsent: list[bytes] = []
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._unsent:
            self.ioloop.call_later(0, self._emit_unsent)
        self._unsent.append(data)

    def _emit_unsent(self) -> None:
        data, self._unsent = b"".join(self._unsent), []
        if data and self._transport is not None:  # None once the stream is gone: nothing to send
            super()._adapter_emit_data(data)


def connect(settings: BrokerSettings, stopping: threading.Event,
            name: str) -> pika.BlockingConnection | None:
    """Connect and declare the topology, retrying until connected or `stopping` is set."""
    backoff = Backoff()
    while not stopping.is_set():
        try:
            connection = pika.BlockingConnection(settings.parameters())
            channel = connection.channel()
            topology.declare(channel)
            channel.close()
            logger.info("%s connected to RabbitMQ at %s:%s vhost %s", name, settings.host,
                        settings.port, settings.vhost)
            return connection
        except CONNECTION_ERRORS as exc:
            delay = backoff.next_delay()
            logger.warning("%s cannot reach RabbitMQ (%s); retrying in %.1fs", name,
                           exc.__class__.__name__, delay)
            stopping.wait(delay)
    return None


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close a connection that may already be broken."""
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except Exception:
        logger.debug("ignoring error while closing a connection", exc_info=True)
