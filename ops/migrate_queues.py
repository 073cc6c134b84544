"""Switch the queues to another type without losing a message: `python -m ops.migrate_queues --to quorum`.

RabbitMQ cannot change a queue's type in place, so for each queue of the topology that is of the
other type this tool
  1. declares a queue of the new type under a temporary name (`<queue>.migrating`),
  2. moves every message into it, publishing each with confirms before acking it at the source,
  3. deletes the old queue once it is empty (it is unbound first, so nothing new arrives),
  4. declares the queue under its real name as the new type, with its arguments and bindings,
  5. moves the messages back the same way and deletes the temporary queue.
Run it with every service stopped (it refuses a queue that has consumers): while a queue is
unbound, what is published for it is unroutable (the services' relays publish with `mandatory`
and publish a returned message again later, but other publishers would lose it). A run that was cut
short can be run again: it finishes what it finds in a temporary queue. Only a crash between a
confirm and its ack can leave a message in both queues; the services recognise such a copy by its
event_id and handle it once.
"""
from __future__ import annotations

import argparse
import sys

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from messaging import topology
from messaging.amqp.connection import Unreachable, connect_once
from messaging.settings import QUEUE_TYPES, ConfigError, broker_settings

TEMPORARY_SUFFIX = ".migrating"


class MigrationRefused(Exception):
    """The migration cannot go on safely (a queue has consumers, or the broker says no)."""


def move(channel: BlockingChannel, source: str, target: str) -> int:
    """Move every message from `source` to `target`, confirmed one by one; return how many."""
    moved = 0
    while True:
        method, properties, body = channel.basic_get(source, auto_ack=False)
        if method is None:
            return moved
        # Raises (and the message stays in `source`) unless the broker confirms it is in `target`.
        channel.basic_publish("", target, body, properties, mandatory=True)
        channel.basic_ack(method.delivery_tag)
        moved += 1


def _exists(connection: pika.BlockingConnection, name: str) -> pika.frame.Method | None:
    """The passive declare-ok of queue `name`, or None when there is no such queue."""
    channel = connection.channel()
    try:
        answer = channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    channel.close()
    return answer


def _type_of(connection: pika.BlockingConnection, queue: topology.Queue, wanted: str) -> str:
    """The type `queue` has on the broker (declaring it as `wanted` when it does not exist)."""
    channel = connection.channel()
    try:
        topology.declare_queue(channel, queue, wanted)
    except topology.QueueMismatch as exc:
        if exc.existing_type is None:
            raise MigrationRefused(str(exc)) from None
        return exc.existing_type
    channel.close()
    return wanted


def _empty_out(connection: pika.BlockingConnection, source: str, target: str,
               bindings: tuple[tuple[str, str], ...] = ()) -> int:
    """Unbind `source`, move it into `target` and delete it once it is seen empty.

    (Quorum queues refuse `queue.delete` with if-empty, so emptiness is checked before the
    delete; with the bindings gone and no consumers, nothing can arrive in between.)
    """
    channel = connection.channel()
    for exchange, key in bindings:
        channel.queue_unbind(source, exchange, key)
    channel.confirm_delivery()
    moved = move(channel, source, target)
    while (left := channel.queue_declare(source, passive=True).method.message_count) > 0:
        moved += move(channel, source, target)  # published just before the unbind took effect
    assert left == 0
    channel.queue_delete(source)
    channel.close()
    return moved


def migrate_queue(connection: pika.BlockingConnection, queue: topology.Queue, current: str,
                  to: str, out=sys.stdout) -> int:
    """Give `queue` (now of type `current`) the type `to`, keeping every message; return how
    many were moved."""
    temporary = queue.name + TEMPORARY_SUFFIX
    moved = 0
    if current != to:
        connection.channel().queue_declare(temporary, durable=True,
                                           arguments={"x-queue-type": to} if to == "quorum" else {})
        moved = _empty_out(connection, queue.name, temporary, queue.bindings)
        channel = connection.channel()
        topology.declare_queue(channel, queue, to)
        channel.close()
    if _exists(connection, temporary) is not None:  # this run's, or one that was cut short
        moved = _empty_out(connection, temporary, queue.name)
    print(f"{queue.name}: {current} -> {to}" + (f", {moved} message(s) moved" if current != to
                                                 else " already"), file=out)
    return moved


def migrate(connection: pika.BlockingConnection, to: str, out=sys.stdout) -> int:
    """Migrate every queue of the topology to type `to`; return the messages moved.

    Nothing is touched unless every queue to migrate is without consumers.
    """
    channel = connection.channel()
    for exchange in topology.EXCHANGES:
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.close()
    types = {queue.name: _type_of(connection, queue, to) for queue in topology.QUEUES}
    for queue in topology.QUEUES:
        consumers = _exists(connection, queue.name).method.consumer_count
        if types[queue.name] != to and consumers:
            raise MigrationRefused(f"queue {queue.name!r} has {consumers} consumer(s): stop every "
                                   f"service before migrating")
    return sum(migrate_queue(connection, queue, types[queue.name], to, out)
               for queue in topology.QUEUES)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.migrate_queues", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, choices=QUEUE_TYPES,
                        help="the queue type to migrate to (then start the services with "
                             "RABBITMQ_QUEUE_TYPE set to it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        connection = connect_once(broker_settings())  # each node in turn
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        moved = migrate(connection, args.to)
        print(f"done: every queue is {args.to}, {moved} message(s) moved; start the services "
              f"with RABBITMQ_QUEUE_TYPE={args.to}")
        return 0
    except MigrationRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except pika.exceptions.AMQPError as exc:
        print(f"error: {exc!r}; nothing is lost: run the command again to finish", file=sys.stderr)
        return 1
    finally:
        if connection.is_open:
            connection.close()


if __name__ == "__main__":
    sys.exit(main())
