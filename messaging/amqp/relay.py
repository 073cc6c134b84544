"""The outbox relay: publishes pending outbox rows with pipelined publisher confirms.

One relay thread owns one pika SelectConnection: this module is its state machine. What is in
flight lives in `confirms.InFlight`; the rows themselves are claimed, given back and deleted through
the outbox's storage side (`outbox.Outbox`), with a lease, so several relays (one per gunicorn
worker, one per replica) can share an outbox. A row is deleted only when the broker confirms it,
and given back when it is nacked or returned as unroutable, so nothing is lost across outages.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import pika
import pika.channel
import pika.spec

from messaging.amqp.confirms import InFlight
from messaging.amqp.connection import (
    Backoff,
    CoalescingSelectConnection,
    NodeRotation,
    close_quietly,
    connect,
)
from messaging.db.outbox import RENEW_EVERY, OutboxUnavailable, PendingMessage
from messaging.observability import metrics, spans
from messaging.observability.spans import publish_span
from messaging.observability.trace_context import HEADER
from messaging.settings import BrokerSettings
from messaging.topology import QueueMismatch

logger = logging.getLogger(__name__)

RETRY_DELAY = 1.0  # seconds before a nacked or unroutable message is published again
DELETE_DELAY = 0.5  # seconds confirmed rows wait, still claimed by us, to be deleted together
DELETE_BATCH = 1000  # confirmed rows that are deleted at once without waiting


class Outbox(Protocol):
    """The storage side of the relay (see `outbox.Outbox`); raises OutboxUnavailable."""

    def claim(self, limit: int) -> list[PendingMessage]: ...

    def release(self, ids: list[int], delay: float) -> None: ...

    def release_mine(self) -> None: ...

    def renew(self) -> int: ...

    def delete(self, ids: list[int]) -> None: ...

    def close(self) -> None: ...


class OutboxSource(Protocol):
    """A store that gives each relay its view of the outbox."""

    def outbox_for(self, owner: str) -> Outbox: ...


class Relay(threading.Thread):
    """Drain an outbox to RabbitMQ; `wake()` after committing a row to publish it at once."""

    def __init__(self, broker: BrokerSettings, store: OutboxSource, name: str,
                 batch: int = 250, max_inflight: int = 1000, poll_interval: float = 0.5,
                 on_refused: Callable[[QueueMismatch], None] | None = None) -> None:
        super().__init__(name=f"{name}-relay", daemon=True)
        # One owner per process: replicas on one host must not renew or release each other's
        # claims. In a container the pid is the same after a restart, so a restarted relay frees
        # the claims its crashed predecessor held as soon as it connects.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{name}"
        self._broker, self._outbox = broker, store.outbox_for(self.owner)
        self._batch, self._max_inflight, self._poll_interval = batch, max_inflight, poll_interval
        self._stopping, self._stopped = threading.Event(), threading.Event()
        self._flush_deadline = float("inf")
        self._connection: pika.SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._inflight = InFlight(metrics.publish_meter())
        self._handed: deque[PendingMessage] = deque()
        self._confirmed: list[int] = []
        self._drained = False
        self._look_in_outbox = True
        self._wake_pending = False
        self._renew_at = 0.0
        self._backoff = Backoff()
        self._nodes = NodeRotation(broker)
        self.on_refused = on_refused  # told when the broker refuses the topology; else logged
        self.connected = False

    def claimant(self) -> str | None:
        """The owner name to claim new outbox rows for, or None while disconnected."""
        return self.owner if self.connected else None

    def hand_over(self, rows: list[PendingMessage]) -> None:
        """Publish rows committed as claimed by `claimant()`, without reading them back (thread-safe)."""
        if self.connected and rows:
            self._handed.extend(rows)
        else:  # committed unclaimed (we were disconnected): read them from the outbox
            self._look_in_outbox = True
        self.wake()

    def wake(self) -> None:
        """Ask the relay to look for new rows now (thread-safe, cheap, coalesced)."""
        if self._connection is None or self._wake_pending:
            return
        self._wake_pending = True
        if not self._call_soon(self._on_wake):
            self._wake_pending = False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking rows, wait up to `timeout` for outstanding confirms, then disconnect."""
        self._flush_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._call_soon(self._pump)
        self._stopped.wait(timeout + 2.0)

    def _call_soon(self, callback) -> bool:
        """Run `callback` on the relay's ioloop; False when there is no ioloop to run it."""
        connection = self._connection
        if connection is None:
            return False
        try:
            connection.ioloop.add_callback_threadsafe(callback)
        except OSError:  # the ioloop closed its wake-up socket: the connection is going away
            return False
        return True

    def run(self) -> None:
        while not self._stopping.is_set():
            try:  # the probe declares the topology and picks the node
                probe = connect(self._broker, self._stopping, self.name, self._nodes)
            except QueueMismatch as exc:
                self._refused(exc)
                break
            close_quietly(probe)
            if probe is None:
                break
            self._wake_pending = False
            self._connection = CoalescingSelectConnection(
                self._broker.parameters(self._nodes.current), on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error, on_close_callback=self._on_closed)
            self._connection.ioloop.start()
            self._after_disconnect()
            if not self._stopping.is_set():
                self._stopping.wait(self._backoff.next_delay())
        self._outbox.close()  # this thread's connection
        self._stopped.set()

    def _refused(self, exc: QueueMismatch) -> None:
        """Stop for good: the broker will not take the topology until someone changes it."""
        self._stopping.set()
        if self.on_refused is not None:
            self.on_refused(exc)
        else:
            logger.error("%s stopped: %s", self.name, exc)

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

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame) -> None:
        self._delete_confirmed()  # left by a disconnect that found the outbox unavailable
        self._release_mine()  # rows claimed for us but never published on an old channel
        self._handed.clear()
        self.connected = True
        metrics.link(self.name, True)
        self._backoff.reset()
        logger.info("%s publishing with confirms", self.name)
        self._renew_at = time.monotonic() + RENEW_EVERY
        self._pump(look_in_outbox=True)
        self._schedule_tick()

    def _on_channel_closed(self, _channel, reason: BaseException) -> None:
        if not self._stopping.is_set():
            logger.warning("%s channel closed: %r", self.name, reason)
        self._channel = None
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _after_disconnect(self) -> None:
        self.connected = False
        metrics.link(self.name, False)
        self._connection = None
        self._delete_confirmed()  # before the claims go: a confirmed row must not be re-sent
        self._inflight.reset()
        self._handed.clear()
        self._release_mine()

    def _release_mine(self) -> None:
        try:
            self._outbox.release_mine()
        except OutboxUnavailable:
            logger.exception("%s could not release its claims; they expire with the lease", self.name)

    # --- publishing ---

    def _schedule_tick(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.ioloop.call_later(self._poll_interval, self._tick)

    def _tick(self) -> None:
        if time.monotonic() >= self._renew_at:
            self._renew()
        self._pump(look_in_outbox=True)
        self._schedule_tick()

    def _renew(self) -> None:
        """Keep our claims (in flight, or confirmed and waiting to be deleted) from lapsing."""
        self._renew_at = time.monotonic() + RENEW_EVERY
        try:
            self._outbox.renew()
        except OutboxUnavailable:
            logger.exception("%s could not renew its claims; trying again on the next tick",
                             self.name)
            self._renew_at = 0.0

    def _on_wake(self) -> None:
        self._wake_pending = False
        self._pump()

    def _pump(self, look_in_outbox: bool = False) -> None:
        """Publish handed-over rows, then (when asked) claimed outbox rows, while the window has room.

        The outbox is read on the periodic tick, at connect and shutdown, and when rows were
        committed unclaimed; rows handed over in memory cost no read at all.
        """
        if not self.connected or self._channel is None or not self._channel.is_open:
            return self._maybe_finish()  # publish only once confirms are on: tags start there
        room = self._max_inflight - len(self._inflight)
        while room > 0 and self._handed and not self._past_deadline():
            self._publish(self._handed.popleft())
            room -= 1
        if not (look_in_outbox or self._look_in_outbox or self._stopping.is_set()):
            return self._maybe_finish()
        self._look_in_outbox = room <= 0  # window full: continue when confirms free it
        while room > 0 and not self._past_deadline():
            try:
                rows = self._outbox.claim(min(room, self._batch))
            except OutboxUnavailable:
                logger.exception("%s could not read the outbox; retrying on the next tick", self.name)
                break
            self._drained = not rows
            if not rows:
                break
            for row in rows:
                self._publish(row)
            room -= len(rows)
            self._look_in_outbox = room <= 0
        self._maybe_finish()

    def _publish(self, row: PendingMessage) -> None:
        message = row.message
        self._inflight.add(row)
        span = publish_span(message) if spans.enabled() else None
        traceparent = span.context.header() if span is not None else message.traceparent
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id, correlation_id=message.correlation_id,
            type=message.type, timestamp=int(row.created_at), user_id=self._broker.user,
            headers={HEADER: traceparent} if traceparent else None)
        channel = self._channel
        assert channel is not None  # rows are published only on an open channel (see _send)
        channel.basic_publish(message.exchange, message.routing_key, message.body, properties,
                              mandatory=True)
        if span is not None:
            span.end()

    def _on_return(self, _channel, method, properties, _body) -> None:
        logger.warning("%s: message %s was unroutable (%s %s); will retry", self.name,
                       properties.message_id, method.exchange, method.routing_key)
        self._inflight.returned(properties.message_id)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        confirmed, again = self._inflight.settle(method.delivery_tag, method.multiple,
                                                 isinstance(method, pika.spec.Basic.Ack))
        self._confirm_later(confirmed)
        if again:
            try:
                self._outbox.release(again, RETRY_DELAY)
            except OutboxUnavailable:
                logger.exception("%s could not give back rejected rows; they return after the lease",
                                 self.name)
            logger.warning("%s: %d message(s) nacked or unroutable; retrying", self.name, len(again))
        self._pump()

    def _confirm_later(self, ids: list[int]) -> None:
        """Delete confirmed rows in one transaction per DELETE_DELAY instead of one per confirm.

        Until then they stay claimed by this relay, so nobody publishes them again; after a crash
        in between they are re-sent, which consumers recognise as duplicates.
        """
        if not ids:
            return
        if not self._confirmed and self._connection is not None:
            self._connection.ioloop.call_later(DELETE_DELAY, self._delete_confirmed)
        self._confirmed.extend(ids)
        if len(self._confirmed) >= DELETE_BATCH:
            self._delete_confirmed()

    def _delete_confirmed(self) -> None:
        ids, self._confirmed = self._confirmed, []
        if not ids:
            return
        try:
            self._outbox.delete(ids)
        except OutboxUnavailable:
            # Still claimed by us: try again soon rather than let the lease lapse and have them
            # published a second time (a cut database connection is back within seconds).
            logger.exception("%s could not delete confirmed rows; trying again in %.1fs",
                             self.name, RETRY_DELAY)
            self._confirmed = ids  # nothing was confirmed meanwhile: this runs on the ioloop
            if self._connection is not None:  # None after a disconnect: retried on connect
                self._connection.ioloop.call_later(RETRY_DELAY, self._delete_confirmed)

    # --- shutdown ---

    def _past_deadline(self) -> bool:
        return self._stopping.is_set() and time.monotonic() >= self._flush_deadline

    def _maybe_finish(self) -> None:
        if not self._stopping.is_set() or self._connection is None:
            return
        if self._past_deadline() or (self._drained and not self._inflight):
            self._delete_confirmed()
            if self._connection.is_open:
                self._connection.close()
            elif not self._connection.is_closing:
                self._connection.ioloop.stop()
