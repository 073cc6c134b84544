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
