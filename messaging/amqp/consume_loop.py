"""A stoppable, reconnecting consume loop that settles messages in batches.

The loop takes deliveries from one queue, hands each batch to the service's handler (which commits
its effects in one transaction), dead-letters what the handler rejects, and acks last with one
multiple-ack. A message handled alone (the queue is quiet) may have its ack owed for up to
ACK_DELAY seconds, to go out with the next ones' in one frame: at a few messages a second each
then costs the broker and us a frame less, and a crash meanwhile only redelivers messages whose
effects the inbox already holds. What no handler should see (a body over MAX_MESSAGE_BYTES,
properties pika could not decode, a message from a broker user not entitled to publish to the
queue) is dead-lettered without being handled. Transient failures are retried with increasing
delay a bounded number of times.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

import pika
from pika.adapters.blocking_connection import BlockingChannel

from messaging import topology
from messaging.amqp.connection import CONNECTION_ERRORS, Backoff, NodeRotation, close_quietly, connect
from messaging.amqp.dead_lettering import dead_letter
from messaging.amqp.delivery import (
    BatchHandler,
    Delivery,
    Rejection,
    delivery_key,
    end_spans,
    split_unfit,
)
from messaging.observability import metrics
from messaging.observability.spans import consume_span
from messaging.settings import BrokerSettings, ConsumerSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")

ACK_DELAY = 0.25  # seconds a lone message's ack may wait to be sent with the next ones


class ConsumeLoop:
    """Consume `queue` until `stop()`, reconnecting with backoff whenever the broker goes away.

    `is_transient(exc)` tells a failure that may pass on retry (a locked database) from one that
    will not; `count_redelivery(key)` durably counts a redelivery and returns the count so far.
    """

    def __init__(self, broker: BrokerSettings, queue: topology.Queue, handle_batch: BatchHandler,
                 service: str, settings: ConsumerSettings,
                 is_transient: Callable[[BaseException], bool] = lambda exc: False,
                 count_redelivery: Callable[[str], int] | None = None) -> None:
        self._broker, self._queue, self._handle = broker, queue, handle_batch
        # A quorum queue counts deliveries itself and dead-letters past its x-delivery-limit.
        self._count_redelivery = None if broker.queue_type == topology.QUORUM else count_redelivery
        self._nodes = NodeRotation(broker)
        self._service, self._settings = service, settings
        self._is_transient = is_transient
        self._stopping = threading.Event()
        self._backoff = Backoff()  # between connections
        self._refused = Backoff()  # after the broker refused a dead letter
        self._requeued: set[str] = set()  # keys put back by us, not redelivered after a crash
        self.consuming = False
        self.processed = 0
        self._meter = metrics.queue_meter(queue.name)
        self._sender = broker.expected_sender(queue.sender)  # None: any publisher is believed
        # Acks owed on the current channel: the highest tag, how many messages, and when it is due.
        # A tenth of the prefetch at most, so the broker's credit to us stays nearly whole.
        self._owed_tag, self._owed, self._ack_due = 0, 0, 0.0
        self._ack_limit = max(1, settings.prefetch // 10)

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run()` (safe from any thread or signal)."""
        self._stopping.set()

    def run(self) -> None:
        """Consume until stopped; never exits because the broker went away.

        Raises topology.QueueMismatch when the broker refuses the queues as declared.
        """
        while not self._stopping.is_set():
            connection = connect(self._broker, self._stopping, self._service, self._nodes)
            if connection is None:
                break
            try:
                self._consume(connection)
            except CONNECTION_ERRORS as exc:
                logger.warning("%s lost RabbitMQ (%r); reconnecting", self._service, exc)
                self._stopping.wait(self._backoff.next_delay())
            except Exception:
                logger.exception("%s: unexpected error; reconnecting", self._service)
                self._stopping.wait(self._backoff.next_delay())
            finally:
                self.consuming = False
                metrics.link(self._service, False)
                close_quietly(connection)
        logger.info("%s stopped consuming %s", self._service, self._queue.name)

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=self._settings.prefetch)
        dead_letters = connection.channel()
        dead_letters.confirm_delivery()
        self._owed_tag, self._owed = 0, 0  # the tags of a lost channel are the broker's to redeliver
        batch: list[Delivery] = []
        for method, properties, body in channel.consume(self._queue.name, inactivity_timeout=0.2):
            if not self.consuming:  # the broker said consume-ok: only now is this connection good
                self.consuming = True
                metrics.link(self._service, True)
                self._backoff.reset()
                logger.info("%s consuming %s (prefetch %d)", self._service, self._queue.name,
                            self._settings.prefetch)
            if method is not None:
                # pika's stubs type every field of a delivery Optional; with a method, all are set.
                batch.append(Delivery(method.delivery_tag, method.exchange,  # type: ignore[arg-type]
                                      method.routing_key, method.redelivered,  # type: ignore[arg-type]
                                      properties, body,  # type: ignore[arg-type]
                                      consume_span(self._queue.name, properties)))
                if len(batch) < self._settings.max_batch and channel.get_waiting_message_count():
                    continue
            if batch:
                self._settle(channel, dead_letters, batch)
                batch = []
            if method is None or self._stopping.is_set():  # quiet, or leaving: nothing is owed
                self._send_acks(channel)
            if self._stopping.is_set():
                break
        channel.cancel()

    def _settle(self, channel: BlockingChannel, dead_letters: BlockingChannel,
                batch: list[Delivery]) -> None:
        """Handle, dead-letter the rejected, put back what the DLQ refused, ack the rest at once."""
        started = time.monotonic()
        received = batch
        batch, rejections = self._over_redelivery_limit(channel.connection, batch)
        batch, unfit = split_unfit(batch, self._settings.max_message_bytes, self._sender)
        rejections += unfit
        if batch:
            rejections += self._handle_with_retries(channel.connection, batch)
        refused = [r.delivery for r in rejections
                   if not dead_letter(dead_letters, self._queue, r, self._service, self._broker.user)]
        for delivery in refused:  # in no queue yet: back to ours, to be dead-lettered later
            channel.basic_nack(delivery.tag, multiple=False, requeue=True)
            self._requeued.add(delivery_key(delivery))
        kept = {d.tag for d in refused}
        to_ack = [d.tag for d in batch + [r.delivery for r in rejections] if d.tag not in kept]
        if to_ack:
            self._owe(max(to_ack), len(to_ack))
        # Only a message handled alone is worth an ack owed: a batch of several already shares
        # one (and a busy queue needs the prefetch free); a dead letter's message leaves at once.
        if (rejections or len(received) > 1 or self._owed >= self._ack_limit
                or time.monotonic() >= self._ack_due):
            self._send_acks(channel)
        self._meter.settled(len(set(to_ack)), started)  # a rejection is in the batch too
        self.processed += len(batch)
        end_spans(received, rejections)
        if refused:
            delay = self._refused.next_delay()
            logger.error("%s: %d dead letter(s) refused by the broker; put back on %s, next try "
                         "in %.1fs", self._service, len(refused), self._queue.name, delay)
            channel.connection.sleep(delay)
        elif rejections:
            self._refused.reset()

    def _owe(self, tag: int, count: int) -> None:
        if not self._owed:
            self._ack_due = time.monotonic() + ACK_DELAY
        self._owed_tag, self._owed = tag, self._owed + count  # tags only grow on a channel

    def _send_acks(self, channel: BlockingChannel) -> None:
        """Ack every owed delivery with one multiple-ack."""
        if self._owed:
            channel.basic_ack(delivery_tag=self._owed_tag, multiple=True)
            self._owed_tag, self._owed = 0, 0

    def _over_redelivery_limit(self, connection: pika.BlockingConnection,
                               batch: list[Delivery]) -> tuple[list[Delivery], list[Rejection]]:
        """Split off redelivered messages seen more often than the limit (e.g. ones that crash us)."""
        if self._count_redelivery is None or not any(d.redelivered for d in batch):
            return batch, []
        keep: list[Delivery] = []
        rejections: list[Rejection] = []
        for delivery in batch:
            attempts = self._attempts(connection, delivery)
            if attempts > self._settings.redelivery_limit:
                rejections.append(Rejection(delivery, "redelivery-limit",
                                            f"delivered {attempts} times without being settled",
                                            attempts))
            else:
                keep.append(delivery)
        return keep, rejections

    def _attempts(self, connection: pika.BlockingConnection, delivery: Delivery) -> int:
        """How often `delivery` has come without being settled; its redeliveries counted durably."""
        key = delivery_key(delivery)
        if not delivery.redelivered or key in self._requeued:
            self._requeued.discard(key)
            return 1
        count = self._count_redelivery
        assert count is not None  # redeliveries are counted only where there is a counter
        outcome = self._attempt(connection, lambda: count(key),
                                f"counting a redelivery of {key}")
        if isinstance(outcome, BaseException):
            raise outcome  # unsettled: it comes back after the reconnect, and is counted then
        return outcome

    def _handle_with_retries(self, connection: pika.BlockingConnection,
                             batch: list[Delivery]) -> list[Rejection]:
        """Run the handler, retrying transient failures; split the batch if they persist."""
        outcome = self._attempt(connection, lambda: self._handle(batch),
                                f"handling a batch of {len(batch)}")
        if not isinstance(outcome, BaseException):
            return outcome
        if len(batch) == 1:
            return [self._rejection_for(batch[0], outcome)]
        logger.warning("%s: batch of %d keeps failing (%r); settling one message at a time",
                       self._service, len(batch), outcome)
        rejections: list[Rejection] = []
        for delivery in batch:
            rejections.extend(self._handle_with_retries(connection, [delivery]))
        return rejections

    def _attempt(self, connection: pika.BlockingConnection, work: Callable[[], T],
                 what: str) -> T | BaseException:
        """Return what `work()` returns, or the error that outlived the transient-retry budget."""
        for attempt in range(1, self._settings.retry_limit + 1):
            try:
                return work()
            except Exception as exc:
                if not self._is_transient(exc):
                    logger.exception("%s: failed %s", self._service, what)
                    return exc
                if attempt == self._settings.retry_limit:
                    return exc
                delay = self._settings.retry_base_delay * (2 ** (attempt - 1))
                self._meter.retried()
                logger.warning("%s: transient failure %s (%r), attempt %d/%d, retrying in %.2fs",
                               self._service, what, exc, attempt, self._settings.retry_limit, delay)
                connection.sleep(delay)
        raise AssertionError("unreachable")

    def _rejection_for(self, delivery: Delivery, error: BaseException) -> Rejection:
        transient = self._is_transient(error)
        reason = "transient-retries-exhausted" if transient else "handler-error"
        text = "".join(traceback.format_exception_only(type(error), error)).strip()
        return Rejection(delivery, reason, text, self._settings.retry_limit if transient else 1)
