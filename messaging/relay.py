"""The outbox relay: publishes pending outbox rows with pipelined publisher confirms.

One relay thread owns one pika SelectConnection. Rows are claimed with a lease, so several relays
(one per gunicorn worker) can share an outbox; a row is deleted only when the broker confirms it,
and given back when it is nacked or returned as unroutable, so nothing is lost across outages.
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable

import pika
import pika.spec

from messaging import outbox
from messaging.connection import Backoff, close_quietly, connect
from messaging.outbox import PendingMessage
from messaging.settings import BrokerSettings
from messaging.storage import transaction

logger = logging.getLogger(__name__)

RETRY_DELAY = 1.0  # seconds before a nacked or unroutable message is published again


class Relay(threading.Thread):
    """Drain an outbox to RabbitMQ; `wake()` after committing a row to publish it at once."""

    def __init__(self, broker: BrokerSettings, open_db: Callable[[], sqlite3.Connection], name: str,
                 batch: int = 250, max_inflight: int = 1000, lease: float = 30.0,
                 poll_interval: float = 0.5) -> None:
        super().__init__(name=f"{name}-relay", daemon=True)
        self._broker, self._open_db = broker, open_db
        self._batch, self._max_inflight = batch, max_inflight
        self._lease, self._poll_interval = lease, poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{name}"
        self._stopping, self._stopped = threading.Event(), threading.Event()
        self._flush_deadline = float("inf")
        self._connection: pika.SelectConnection | None = None
        self._channel = None
        self._inflight: dict[int, PendingMessage] = {}
        self._returned: set[str] = set()
        self._tag = 0
        self._drained = False
        self._wake_pending = False
        self._backoff = Backoff()
        self.connected = False
        self.published = 0

    def wake(self) -> None:
        """Ask the relay to look for new rows now (thread-safe, cheap, coalesced)."""
        connection = self._connection
        if connection is None or self._wake_pending:
            return
        self._wake_pending = True
        try:
            connection.ioloop.add_callback_threadsafe(self._on_wake)
        except Exception:
            self._wake_pending = False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking rows, wait up to `timeout` for outstanding confirms, then disconnect."""
        self._flush_deadline = time.monotonic() + timeout
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            try:
                connection.ioloop.add_callback_threadsafe(self._pump)
            except Exception:
                pass
        self._stopped.wait(timeout + 2.0)

    def run(self) -> None:
        self._db = self._open_db()
        while not self._stopping.is_set():
            probe = connect(self._broker, self._stopping, self.name)  # declares the topology
            close_quietly(probe)
            if probe is None:
                break
            self._wake_pending = False
            self._connection = pika.SelectConnection(
                self._broker.parameters(), on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error, on_close_callback=self._on_closed)
            self._connection.ioloop.start()
            self._after_disconnect()
            if not self._stopping.is_set():
                self._stopping.wait(self._backoff.next_delay())
        self._db.close()
        self._stopped.set()

    # --- connection lifecycle (all on the ioloop thread) ---

    def _on_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection: pika.SelectConnection, error: BaseException) -> None:
        logger.warning("%s could not open a connection: %r", self.name, error)
        connection.ioloop.stop()

    def _on_closed(self, connection: pika.SelectConnection, reason: BaseException) -> None:
        self.connected = False
        self._channel = None
        if not self._stopping.is_set():
            logger.warning("%s lost its connection: %r", self.name, reason)
        connection.ioloop.stop()

    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame) -> None:
        self.connected = True
        self._backoff.reset()
        logger.info("%s publishing with confirms", self.name)
        self._pump()
        self._schedule_tick()

    def _on_channel_closed(self, _channel, reason: BaseException) -> None:
        if not self._stopping.is_set():
            logger.warning("%s channel closed: %r", self.name, reason)
        self._channel = None
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _after_disconnect(self) -> None:
        self.connected = False
        self._connection = None
        self._inflight.clear()
        self._returned.clear()
        self._tag = 0  # delivery tags restart at 1 on every new channel
        try:
            outbox.release_all(self._db, self.owner)
        except sqlite3.Error:
            logger.exception("%s could not release its claims; they expire with the lease", self.name)

    # --- publishing ---

    def _schedule_tick(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.ioloop.call_later(self._poll_interval, self._tick)

    def _tick(self) -> None:
        self._pump()
        self._schedule_tick()

    def _on_wake(self) -> None:
        self._wake_pending = False
        self._pump()

    def _pump(self) -> None:
        """Publish claimed rows while there is room in the confirm window."""
        if self._channel is None or not self._channel.is_open:
            return self._maybe_finish()
        room = self._max_inflight - len(self._inflight)
        while room > 0 and not self._past_deadline():
            try:
                rows = outbox.claim(self._db, self.owner, min(room, self._batch), self._lease)
            except sqlite3.Error:
                logger.exception("%s could not read the outbox; retrying on the next tick", self.name)
                break
            self._drained = not rows
            if not rows:
                break
            for row in rows:
                self._publish(row)
            room -= len(rows)
        self._maybe_finish()

    def _publish(self, row: PendingMessage) -> None:
        message = row.message
        self._tag += 1
        self._inflight[self._tag] = row
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id, correlation_id=message.correlation_id,
            type=message.type, timestamp=int(row.created_at))
        self._channel.basic_publish(message.exchange, message.routing_key, message.body,
                                    properties, mandatory=True)

    def _on_return(self, _channel, method, properties, _body) -> None:
        logger.warning("%s: message %s was unroutable (%s %s); will retry", self.name,
                       properties.message_id, method.exchange, method.routing_key)
        self._returned.add(properties.message_id)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        tags = ([t for t in self._inflight if t <= method.delivery_tag] if method.multiple
                else [method.delivery_tag])
        rows = [self._inflight.pop(t) for t in tags if t in self._inflight]
        acked = isinstance(method, pika.spec.Basic.Ack)
        done = [r.id for r in rows if acked and r.message.message_id not in self._returned]
        retry = [r.id for r in rows if r.id not in done]
        self._returned.difference_update(r.message.message_id for r in rows)
        try:
            with transaction(self._db):
                outbox.delete(self._db, done)
                outbox.release(self._db, retry, RETRY_DELAY)
        except sqlite3.Error:
            logger.exception("%s could not record confirms; rows will be re-sent after the lease",
                             self.name)
        self.published += len(done)
        if retry:
            logger.warning("%s: %d message(s) nacked or unroutable; retrying", self.name, len(retry))
        self._pump()

    # --- shutdown ---

    def _past_deadline(self) -> bool:
        return self._stopping.is_set() and time.monotonic() >= self._flush_deadline

    def _maybe_finish(self) -> None:
        if not self._stopping.is_set() or self._connection is None:
            return
        if self._past_deadline() or (self._drained and not self._inflight):
            if self._connection.is_open:
                self._connection.close()
            elif not self._connection.is_closing:
                self._connection.ioloop.stop()
