"""Connecting to RabbitMQ: capped exponential backoff, stoppable, topology declared on every connect.

With several nodes in RABBITMQ_HOST, each connection tries them in turn, beginning after the node
it last used: a connection whose node went away tries the others first.
"""
from __future__ import annotations

import logging
import random
import threading

import pika
import pika.exceptions

from messaging import topology
from messaging.amqp import connect_failures
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
        # pika's stubs lack the adapter's transport and its emit method, which this class overrides.
        if data and self._transport is not None:  # type: ignore[attr-defined]  # None once the stream is gone
            super()._adapter_emit_data(data)  # type: ignore[misc]


class NodeRotation:
    """The order one connection tries the broker's nodes in: after each connect, the next node
    comes first, so a connection that lost its node tries the others before it."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._count = len(settings.nodes)
        self._first = 0
        self.current = 0  # the node of the last successful connect

    def order(self) -> list[int]:
        return [(self._first + i) % self._count for i in range(self._count)]

    def connected(self, node: int) -> None:
        self.current, self._first = node, (node + 1) % self._count


def connect(settings: BrokerSettings, stopping: threading.Event, name: str,
            nodes: NodeRotation | None = None) -> pika.BlockingConnection | None:
    """Connect to one of the nodes and declare the topology, retrying until connected or
    `stopping` is set; raises topology.QueueMismatch, which no retry mends."""
    backoff, nodes = Backoff(), nodes or NodeRotation(settings)
    while not stopping.is_set():
        explained: str | None = None  # a node's failure that says what to fix wins over the others
        for node in nodes.order():
            try:
                connection = open_declared(settings, node)
            except CONNECTION_ERRORS as exc:
                error = exc
                explained = explained or connect_failures.explain(exc, *settings.nodes[node],
                                                                  settings.tls is not None)
                continue
            nodes.connected(node)
            host, port = settings.nodes[node]
            logger.info("%s connected to RabbitMQ at %s:%s vhost %s", name, host, port,
                        settings.vhost)
            return connection
        delay = backoff.next_delay()
        logger.warning("%s cannot reach RabbitMQ (%s); retrying in %.1fs", name,
                       explained or error.__class__.__name__, delay)
        stopping.wait(delay)
    return None


class Unreachable(Exception):
    """No node of RABBITMQ_HOST took a connection; the message says why, in one line."""


def connect_once(settings: BrokerSettings) -> pika.BlockingConnection:
    """Open a connection (nothing declared) to the first node that takes one, for a one-shot tool;
    raises Unreachable."""
    explained, error = None, None
    for node, (host, port) in enumerate(settings.nodes):
        try:
            return pika.BlockingConnection(settings.parameters(node))
        except CONNECTION_ERRORS as exc:
            error = exc
            explained = explained or connect_failures.explain(exc, host, port, settings.tls is not None)
    raise Unreachable(f"cannot reach RabbitMQ: {explained or repr(error)}")


def open_declared(settings: BrokerSettings, node: int = 0) -> pika.BlockingConnection:
    """Connect to the `node`-th node once and declare the topology on it: the whole of it, or with
    RABBITMQ_TOPOLOGY=own only the service's part, which its narrow broker user may declare."""
    connection = pika.BlockingConnection(settings.parameters(node))
    part = topology.WHOLE if settings.part is None else topology.PARTS[settings.part]
    try:
        channel = connection.channel()
        topology.declare(channel, settings.queue_type, part)
        channel.close()
    except BaseException:
        close_quietly(connection)
        raise
    return connection


def check_topology(settings: BrokerSettings) -> bool:
    """Declare the topology once on the first node that answers; False when none does.

    Raises topology.QueueMismatch when the broker has the queues in another shape.
    """
    for node in range(len(settings.nodes)):
        try:
            close_quietly(open_declared(settings, node))
            return True
        except CONNECTION_ERRORS:
            continue
    return False


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close a connection that may already be broken."""
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except Exception:
        logger.debug("ignoring error while closing a connection", exc_info=True)
