"""A stoppable, reconnecting consume loop that settles messages in batches.

The loop takes deliveries from one queue, hands each batch to the service's handler (which commits
its effects in one transaction), dead-letters what the handler rejects, and acks last with one
multiple-ack. Transient failures are retried with increasing delay a bounded number of times.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from messaging import topology
from messaging.connection import CONNECTION_ERRORS, Backoff, close_quietly, connect
from messaging.deadletter import dead_letter
from messaging.events import Poison
from messaging.settings import BrokerSettings, ConsumerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One message as taken from the queue."""

    tag: int
    exchange: str
    routing_key: str
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes


@dataclass(frozen=True)
class Rejection:
    """A delivery that must go to the dead-letter queue, and why."""

    delivery: Delivery
    reason: str
    error: str
    attempts: int = 1


BatchHandler = Callable[[list[Delivery]], list[Rejection]]
T = TypeVar("T")


def parse_all(deliveries: list[Delivery], parse: Callable[[bytes], T]) -> tuple[list[T], list[Rejection]]:
    """Parse every body; the poison ones (`Poison` raised) become rejections with their reason."""
    parsed: list[T] = []
    rejections: list[Rejection] = []
    for delivery in deliveries:
        try:
            parsed.append(parse(delivery.body))
        except Poison as poison:
            rejections.append(Rejection(delivery, poison.reason, str(poison)))
    return parsed, rejections


class TransientError(Exception):
    """A failure that may pass if the same work is tried again later."""


class ConsumeLoop:
    """Consume `queue` until `stop()`, reconnecting with backoff whenever the broker goes away."""

    def __init__(self, broker: BrokerSettings, queue: topology.Queue, handle_batch: BatchHandler,
                 service: str, settings: ConsumerSettings,
                 is_transient: Callable[[BaseException], bool] = lambda exc: False,
                 count_redelivery: Callable[[str], int] | None = None) -> None:
        self._broker, self._queue, self._handle = broker, queue, handle_batch
        self._count_redelivery = count_redelivery
        self._service, self._settings = service, settings
        self._is_transient = lambda exc: isinstance(exc, TransientError) or is_transient(exc)
        self._stopping = threading.Event()
        self.consuming = False
        self.processed = 0

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run()` (safe from any thread or signal)."""
        self._stopping.set()

    def run(self) -> None:
        """Consume until stopped; never exits because the broker went away."""
        backoff = Backoff()
        while not self._stopping.is_set():
            connection = connect(self._broker, self._stopping, self._service)
            if connection is None:
                break
            try:
                backoff.reset()
                self._consume(connection)
            except CONNECTION_ERRORS as exc:
                logger.warning("%s lost RabbitMQ (%r); reconnecting", self._service, exc)
                self._stopping.wait(backoff.next_delay())
            except Exception:
                logger.exception("%s: unexpected error; reconnecting", self._service)
                self._stopping.wait(backoff.next_delay())
            finally:
                self.consuming = False
                close_quietly(connection)
        logger.info("%s stopped consuming %s", self._service, self._queue.name)

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=self._settings.prefetch)
        dead_letters = connection.channel()
        dead_letters.confirm_delivery()
        self.consuming = True
        logger.info("%s consuming %s (prefetch %d)", self._service, self._queue.name,
                    self._settings.prefetch)
        batch: list[Delivery] = []
        for method, properties, body in channel.consume(self._queue.name, inactivity_timeout=0.2):
            if method is not None:
                batch.append(Delivery(method.delivery_tag, method.exchange, method.routing_key,
                                      method.redelivered, properties, body))
                if len(batch) < self._settings.max_batch and channel.get_waiting_message_count():
                    continue
            if batch:
                self._settle(channel, dead_letters, batch)
                batch = []
            if self._stopping.is_set():
                break
        channel.cancel()

    def _settle(self, channel: BlockingChannel, dead_letters: BlockingChannel,
                batch: list[Delivery]) -> None:
        batch, rejections = self._over_redelivery_limit(batch)
        if batch:
            rejections += self._handle_with_retries(channel.connection, batch)
        rejected = {r.delivery.tag for r in rejections
                    if not dead_letter(dead_letters, channel, self._queue, r, self._service)}
        to_ack = [d.tag for d in batch + [r.delivery for r in rejections] if d.tag not in rejected]
        if to_ack:
            channel.basic_ack(delivery_tag=max(to_ack), multiple=True)
        self.processed += len(batch)

    def _over_redelivery_limit(self, batch: list[Delivery]) -> tuple[list[Delivery], list[Rejection]]:
        """Split off redelivered messages seen more often than the limit (e.g. ones that crash us)."""
        if self._count_redelivery is None or not any(d.redelivered for d in batch):
            return batch, []
        keep: list[Delivery] = []
        rejections: list[Rejection] = []
        for delivery in batch:
            attempts = self._count_redelivery(delivery_key(delivery)) if delivery.redelivered else 1
            if attempts > self._settings.redelivery_limit:
                rejections.append(Rejection(delivery, "redelivery-limit",
                                            f"delivered {attempts} times without being settled",
                                            attempts))
            else:
                keep.append(delivery)
        return keep, rejections

    def _handle_with_retries(self, connection: pika.BlockingConnection,
                             batch: list[Delivery]) -> list[Rejection]:
        """Run the handler, retrying transient failures; split the batch if they persist."""
        error = self._attempt(connection, batch)
        if not isinstance(error, BaseException):
            return error
        if len(batch) == 1:
            return [self._rejection_for(batch[0], error, self._settings.retry_limit)]
        logger.warning("%s: batch of %d keeps failing (%r); settling one message at a time",
                       self._service, len(batch), error)
        rejections: list[Rejection] = []
        for delivery in batch:
            rejections.extend(self._handle_with_retries(connection, [delivery]))
        return rejections

    def _attempt(self, connection: pika.BlockingConnection,
                 batch: list[Delivery]) -> list[Rejection] | BaseException:
        """Return the handler's rejections, or the error that outlived the retry budget."""
        for attempt in range(1, self._settings.retry_limit + 1):
            try:
                return self._handle(batch)
            except Exception as exc:
                if not self._is_transient(exc):
                    logger.exception("%s: handler failed on a batch of %d", self._service, len(batch))
                    return exc
                if attempt == self._settings.retry_limit:
                    return exc
                delay = self._settings.retry_base_delay * (2 ** (attempt - 1))
                logger.warning("%s: transient failure (%r), attempt %d/%d, retrying in %.2fs",
                               self._service, exc, attempt, self._settings.retry_limit, delay)
                connection.sleep(delay)
        raise AssertionError("unreachable")

    def _rejection_for(self, delivery: Delivery, error: BaseException, attempts: int) -> Rejection:
        transient = self._is_transient(error)
        reason = "transient-retries-exhausted" if transient else "handler-error"
        text = "".join(traceback.format_exception_only(type(error), error)).strip()
        return Rejection(delivery, reason, text, attempts if transient else 1)



def delivery_key(delivery: Delivery) -> str:
    """Identify a message across redeliveries: its message_id, else a hash of its body."""
    if delivery.properties.message_id:
        return f"id:{delivery.properties.message_id}"
    return "sha256:" + hashlib.sha256(delivery.body).hexdigest()
