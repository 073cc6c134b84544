"""Publishing dead letters: the original message to `dlx`, with headers saying where it came from and why.

The operator's tool that reads them back is `ops/dlq.py`.
"""
from __future__ import annotations

import logging
import time

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from messaging import topology
from messaging.amqp.delivery import Rejection
from messaging.amqp.header_values import writable
from messaging.observability import metrics
from messaging.observability.trace_context import about

logger = logging.getLogger(__name__)

REASON = "x-dlq-reason"
ERROR = "x-dlq-error"
ATTEMPTS = "x-dlq-attempts"
SERVICE = "x-dlq-service"
QUEUE = "x-dlq-queue"
DEAD_AT = "x-dlq-at"
ORIGINAL_EXCHANGE = "x-original-exchange"
ORIGINAL_ROUTING_KEY = "x-original-routing-key"
# Who published the message: the dead letter itself is published by the dead-lettering service's
# user (RabbitMQ allows no other user_id), so a replay can restore the original sender.
ORIGINAL_USER_ID = "x-original-user-id"
REWRITTEN = "x-dlq-rewritten-headers"  # headers whose values were made writable (header_values)
MAX_ERROR_LENGTH = 1000
REFUSALS = {pika.exceptions.UnroutableError: "unroutable", pika.exceptions.NackError: "nacked"}


def story_headers(rejection: Rejection, queue: topology.Queue, service: str) -> dict:
    """Return the original headers (made writable) plus where the message came from and why it died."""
    delivery = rejection.delivery
    headers, rewritten = writable(delivery.properties.headers or {})
    if rewritten:
        headers[REWRITTEN] = rewritten
    headers.update({
        REASON: rejection.reason,
        ERROR: rejection.error[:MAX_ERROR_LENGTH],
        ATTEMPTS: rejection.attempts,
        SERVICE: service,
        QUEUE: queue.name,
        DEAD_AT: int(time.time()),
        ORIGINAL_EXCHANGE: delivery.exchange,
        ORIGINAL_ROUTING_KEY: delivery.routing_key,
    })
    if delivery.properties.user_id:
        headers[ORIGINAL_USER_ID] = delivery.properties.user_id
    return headers


def dead_letter(publisher: BlockingChannel, queue: topology.Queue, rejection: Rejection,
                service: str, user_id: str | None = None) -> bool:
    """Publish the message to `dlx` with its story, confirmed, as `user_id` (the connection's
    user); False when the broker refused it.

    Refused means nacked (e.g. the DLQ is full with `overflow: reject-publish`) or returned as
    unroutable (nothing bound for the DLQ's key): the message is then in no queue, and the caller
    must keep the delivery.
    """
    delivery = rejection.delivery
    source = delivery.properties
    properties = pika.BasicProperties(
        content_type=source.content_type, content_encoding=source.content_encoding,
        delivery_mode=pika.DeliveryMode.Persistent, message_id=source.message_id,
        correlation_id=source.correlation_id, type=source.type, timestamp=source.timestamp,
        user_id=user_id, headers=story_headers(rejection, queue, service))
    with about(delivery.span.context if delivery.span else None, event_id=source.message_id):
        logger.warning("%s: dead-lettering message %s from %s: %s (%s)", service,
                       source.message_id or f"tag {delivery.tag}", queue.name, rejection.reason,
                       rejection.error)
        assert queue.dead_letter_key is not None  # only a work queue's deliveries are dead-lettered
        try:
            publisher.basic_publish(topology.DEAD_LETTER_EXCHANGE, queue.dead_letter_key,
                                    delivery.body, properties, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            logger.error("%s: the broker refused dead letter %s for %s (%s)", service,
                         source.message_id or f"tag {delivery.tag}", queue.dead_letter_key,
                         type(exc).__name__)
            metrics.dead_letter_refused(queue.name, REFUSALS[type(exc)])
            return False
    metrics.dead_lettered(queue.name, rejection.reason)
    return True
