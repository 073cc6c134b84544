"""Chaos tooling: a stream of orders, broker faults, and settling the system before an audit."""
from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import pika.exceptions
import requests

from messaging import events, topology
from messaging.db.dialect import SQLITE, postgres
from ops import audit
from stack.broker import Broker
from stack.private_broker import PrivateBroker
from stack.processes import ROOT, Stack
from tests.client import drain, wait_for


class OrderStream(threading.Thread):
    """POST orders at about `rate` per second until stopped; remember every 202."""

    def __init__(self, base_url: str, rate: float = 40.0, limit: int = 10_000) -> None:
        super().__init__(daemon=True)
        self.base_url, self.interval, self.limit = base_url, 1.0 / rate, limit
        self.accepted: list[str] = []
        self.refused = 0
        self._halt = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        items = ("Burger", "Pizza", "Salad", "Sushi", "Coffee")
        i = 0
        while not self._halt.is_set() and i < self.limit:
            body = {"user_id": f"user{i % 7}", "item": items[i % len(items)], "quantity": 1 + i % 3}
            try:
                response = session.post(f"{self.base_url}/order", json=body, timeout=5)
                if response.status_code == 202:
                    self.accepted.append(response.json()["order_id"])
                else:
                    self.refused += 1
            except requests.RequestException:
                self.refused += 1
                session = requests.Session()
            i += 1
            self._halt.wait(self.interval)

    def stop(self) -> list[str]:
        self._halt.set()
        self.join(timeout=30)
        return self.accepted


@contextlib.contextmanager
def broker_stopped(broker: PrivateBroker) -> Iterator[None]:
    """Stop the (private) broker's RabbitMQ application for the block; always start it again."""
    broker.stop_app()
    try:
        yield
    finally:
        broker.start_app()


def current_watermark(broker: PrivateBroker) -> str:
    """The broker's memory high watermark as rabbitmqctl takes it back (0.4 when it cannot say)."""
    try:
        value = float(broker.memory_watermark())
    except (RuntimeError, ValueError):
        return "0.4"
    return str(value) if value > 0 else "0.4"  # 0 is an alarm someone left raised, not a setting


@contextlib.contextmanager
def memory_alarm(broker: PrivateBroker) -> Iterator[None]:
    """Raise the (private) broker's memory alarm for the block (publishers block); always restore
    the watermark."""
    watermark = current_watermark(broker)
    broker.set_memory_watermark("0")
    try:
        yield
    finally:
        broker.set_memory_watermark(watermark)


def snapshot(stack: Stack) -> audit.Snapshot:
    return audit.read(stack["order"].store, stack["inventory"].store, stack["notification"].store)


def _settling(exc: BaseException) -> bool:
    """Whether `exc` is what the system may answer while it settles, rather than a failure."""
    if isinstance(exc, pika.exceptions.AMQPConnectionError):
        return True  # the broker is not accepting connections yet (it is starting after a fault)
    # A store is being written (or its WAL recovered by a restarted service) as we read it.
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)) or any(
        dialect.is_transient(exc) for dialect in (SQLITE, postgres()))


def settled(stack: Stack, broker: Broker, accepted: list[str]) -> bool:
    """Every accepted order is final, every invariant holds and no queue holds work."""
    try:
        snap = snapshot(stack)
        if not all(snap.orders.get(order_id) in ("reserved", "failed") for order_id in accepted):
            return False
        if not all(invariant.ok for invariant in audit.check(snap)):
            return False
        return all(broker.depth(stack.vhost, q) == 0
                   for q in ("order-events", "inventory-events", "order-status"))
    except Exception as exc:  # told apart by _settling
        if not _settling(exc):
            raise
        return False


class ResultProbe:
    """Every result InventoryService publishes from the scenario's start on, by order.

    A durable queue of our own bound to exchange `inventory` with `inventory.*` (results are
    published persistently, so the queue keeps them across a broker restart). The same result
    published again (same event_id) is at-least-once delivery; two different event_ids for one
    order mean InventoryService decided that order twice.
    """

    QUEUE = "chaos-result-probe"

    def __init__(self, broker: Broker, vhost: str) -> None:
        self.broker, self.vhost = broker, vhost
        self.results: dict[str, set[str]] = {}
        with broker.channel(vhost) as channel:
            channel.exchange_declare(topology.INVENTORY_EXCHANGE, "topic", durable=True)
            channel.queue_declare(self.QUEUE, durable=True)
            channel.queue_bind(self.QUEUE, topology.INVENTORY_EXCHANGE, "inventory.*")

    def collect(self) -> dict[str, set[str]]:
        """Take what arrived since the last call; return order_id -> result event_ids so far."""
        with self.broker.channel(self.vhost) as channel:
            for _, body in drain(channel, self.QUEUE):
                try:
                    result = events.parse_inventory_result(body)
                except events.Poison:
                    continue  # poison a scenario published to the exchange itself
                self.results.setdefault(result.order_id, set()).add(result.event_id)
        return self.results


NOTIFICATION_SENT = re.compile(r"Notification sent: order_id=(\S+)")


def notifications_per_order(stack: Stack) -> Counter:
    """order_id -> "Notification sent" lines NotificationService logged for it (across restarts,
    and across its instances)."""
    return Counter(order_id for instance in stack.instances("notification")
                   for order_id in NOTIFICATION_SENT.findall(instance.log()))


@dataclass
class Figures:
    """What one scenario measured."""

    scenario: str
    accepted: int = 0
    refused: int = 0
    lost: int = 0
    duplicated: int = 0  # orders decided twice (two result ids) plus orders notified twice
    recovery_seconds: float = 0.0
    notes: dict = field(default_factory=dict)
    probe: ResultProbe | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        """The figures as JSON-ready values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "probe"}


def unsettled(stack: Stack, broker: Broker, accepted: list[str]) -> str:
    """What still keeps the system from settling, told in one line."""
    try:
        snap = snapshot(stack)
        waiting = [o for o in accepted if snap.orders.get(o) not in ("reserved", "failed")]
        failing = [invariant.name for invariant in audit.check(snap) if not invariant.ok]
        depths = {q: broker.depth(stack.vhost, q)
                  for q in ("order-events", "inventory-events", "order-status")}
    except Exception as exc:  # a diagnosis, not a verdict
        return f"no snapshot: {exc!r}"
    return (f"{len(waiting)} accepted orders not final (e.g. {waiting[:3]}), failing invariants "
            f"{failing}, queue depths {depths}")


def settle_and_audit(stack: Stack, broker: Broker, accepted: list[str], figures: Figures,
                     since: float, timeout: float = 30.0) -> audit.Snapshot:
    """Wait for the system to settle, then assert the audit passes; fill in the figures."""
    try:
        wait_for(lambda: settled(stack, broker, accepted), timeout=timeout, interval=0.25,
                 what=f"{figures.scenario}: the system to settle with every invariant holding")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {unsettled(stack, broker, accepted)}") from None
    figures.recovery_seconds = round(time.monotonic() - since, 2)
    snap = snapshot(stack)
    figures.accepted = len(accepted)
    figures.lost = sum(1 for order_id in accepted if snap.orders.get(order_id) not in ("reserved", "failed"))
    assert figures.probe is not None, "the scenario's result probe"
    results = figures.probe.collect()
    unseen = [order_id for order_id in accepted if order_id not in results]
    assert not unseen, f"the probe saw no result for {len(unseen)} final orders, e.g. {unseen[:3]}"
    decided_twice = sorted(o for o, ids in results.items() if len(ids) > 1)
    notified_twice = sorted(o for o, n in notifications_per_order(stack).items() if n > 1)
    figures.duplicated = len(decided_twice) + len(notified_twice)
    result = subprocess.run(
        [sys.executable, "-m", "ops.audit", *stack.audit_args()],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert figures.lost == 0
    assert not decided_twice, f"orders with two different results: {decided_twice[:5]}"
    assert not notified_twice, f"orders notified more than once: {notified_twice[:5]}"
    return snap
