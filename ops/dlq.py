"""Inspect and replay dead letters: `python -m ops.dlq list | show ID | replay ID... | replay --all`.

Messages are read with basic.get and left in place unless replayed; a replayed message is published,
with confirms, to its original exchange and routing key and only then removed from its DLQ.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import pika
import pika.exceptions

from messaging import topology
from messaging.amqp import dead_lettering
from messaging.amqp.connection import Unreachable, connect_once
from messaging.settings import ConfigError, broker_settings

DLQ_NAMES = tuple(q.name for q in topology.DEAD_LETTER_QUEUES)
REPLAYED = "x-dlq-replayed"


@dataclass
class DeadLetter:
    """One message held from a DLQ during a command."""

    queue: str
    position: int
    tag: int
    properties: pika.BasicProperties
    body: bytes

    @property
    def key(self) -> str:
        return self.properties.message_id or f"{self.queue}#{self.position}"

    def header(self, name: str, default=None):
        return (self.properties.headers or {}).get(name, default)

    def origin(self) -> tuple[str, str]:
        """The exchange and routing key the message was first published to."""
        exchange = self.header(dead_lettering.ORIGINAL_EXCHANGE)
        if exchange is not None:
            return _text(exchange), _text(self.header(dead_lettering.ORIGINAL_ROUTING_KEY, ""))
        deaths = self.header("x-death") or []  # dead-lettered by the broker itself
        if deaths:
            return _text(deaths[0].get("exchange", "")), _text((deaths[0].get("routing-keys") or [""])[0])
        raise ValueError(f"{self.key}: no record of its original exchange")

    def reason(self) -> str:
        reason = self.header(dead_lettering.REASON)
        if reason is None and self.header("x-death"):
            reason = self.header("x-death")[0].get("reason")
        return _text(reason or "unknown")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def hold(channel, queues: Iterable[str], limit: int) -> list[DeadLetter]:
    """Take up to `limit` messages from each queue without acking them."""
    held: list[DeadLetter] = []
    for queue in queues:
        for position in range(1, limit + 1):
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            held.append(DeadLetter(queue, position, method.delivery_tag, properties, body))
    return held


def replay(channel, letter: DeadLetter) -> None:
    """Publish `letter` to where it came from (confirmed), then remove it from the DLQ."""
    exchange, routing_key = letter.origin()
    headers = {k: v for k, v in (letter.properties.headers or {}).items()
               if not k.startswith("x-dlq-") and not k.startswith("x-original-") and k != "x-death"}
    headers[REPLAYED] = int(letter.header(REPLAYED, 0)) + 1
    source = letter.properties
    properties = pika.BasicProperties(
        content_type=source.content_type, delivery_mode=pika.DeliveryMode.Persistent,
        message_id=source.message_id, correlation_id=source.correlation_id, type=source.type,
        timestamp=source.timestamp, headers=headers,
        # As its first publisher: the consumers believe only the user entitled to their queue, and
        # RabbitMQ lets the operator publish as another user only with the `impersonator` tag.
        user_id=_text(letter.header(dead_lettering.ORIGINAL_USER_ID, "")) or None)
    channel.basic_publish(exchange, routing_key, letter.body, properties, mandatory=True)
    channel.basic_ack(letter.tag)


def describe(letter: DeadLetter) -> dict:
    """A JSON-friendly summary of a dead letter."""
    try:
        exchange, routing_key = letter.origin()
    except ValueError:
        exchange, routing_key = "?", "?"
    return {"id": letter.key, "queue": letter.queue, "reason": letter.reason(),
            "error": _text(letter.header(dead_lettering.ERROR, "")),
            "attempts": letter.header(dead_lettering.ATTEMPTS),
            "service": _text(letter.header(dead_lettering.SERVICE, "")),
            "original_exchange": exchange, "original_routing_key": routing_key,
            "dead_at": letter.header(dead_lettering.DEAD_AT)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.dlq", description=__doc__)
    parser.add_argument("--queue", action="append", choices=DLQ_NAMES,
                        help="a DLQ to work on (repeatable; default: all of them)")
    parser.add_argument("--limit", type=int, default=10_000, help="messages to read per queue")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list dead letters with their reason")
    show = commands.add_parser("show", help="show one dead letter: headers and body")
    show.add_argument("id", help="its message_id (or QUEUE#N from `list`)")
    again = commands.add_parser("replay", help="republish dead letters to their original exchange")
    again.add_argument("ids", nargs="*", help="message ids (or QUEUE#N) to replay")
    again.add_argument("--all", action="store_true", help="replay every dead letter")
    again.add_argument("--reason", help="replay those dead-lettered for this reason")
    return parser


def _select(args, held: list[DeadLetter]) -> list[DeadLetter]:
    if args.all:
        return held
    if args.reason:
        return [letter for letter in held if letter.reason() == args.reason]
    return [letter for letter in held if letter.key in set(args.ids)]


def run(args: argparse.Namespace, out=sys.stdout) -> int:
    """Carry out one command; return the exit status."""
    connection = connect_once(broker_settings())  # each node in turn
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        held = hold(channel, args.queue or DLQ_NAMES, args.limit)
        if args.command == "list":
            rows = [describe(letter) for letter in held]
            if args.json:
                print(json.dumps(rows, indent=2), file=out)
            for row in [] if args.json else rows:
                print(f"{row['id']}  {row['queue']}  {row['reason']}  attempts={row['attempts']}  "
                      f"from={row['original_exchange']}/{row['original_routing_key']}  {row['error']}",
                      file=out)
            if not args.json:
                print(f"{len(rows)} dead letter(s)", file=out)
            return 0
        if args.command == "show":
            match = [letter for letter in held if letter.key == args.id]
            if not match:
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            letter = match[0]
            body = letter.body.decode(errors="replace")
            print(json.dumps({**describe(letter), "headers": _plain(letter.properties.headers or {}),
                              "body": body}, indent=2, default=str), file=out)
            return 0
        chosen = _select(args, held)
        if not chosen:
            print("nothing to replay (name ids, --reason or --all)", file=sys.stderr)
            return 1
        for letter in chosen:
            replay(channel, letter)
            print(f"replayed {letter.key} to {'/'.join(letter.origin())}", file=out)
        print(f"{len(chosen)} replayed", file=out)
        return 0
    finally:
        if connection.is_open:
            connection.close()  # anything held and not replayed goes back to its DLQ


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return _text(value) if isinstance(value, bytes) else value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (pika.exceptions.AMQPError, ValueError) as exc:
        print(f"error: {exc!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
