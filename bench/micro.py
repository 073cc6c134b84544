"""In-process measurements of single pieces, no broker: `python -m bench.micro`.

- commit: 5,000 OrderStore.add calls one after another on a file in DATA_DIR (default: a
  temporary directory on the current working directory's disk), timed one by one, with SQLite's
  own checkpoints inside commits and with checkpoints in a background thread.
- inventory: InventoryUnitOfWork.handle_batch on 50 batches of 100 OrderPlaced deliveries, CPU
  microseconds per message.
- gc: how long a full (generation 2) garbage collection takes once OrderService's Flask app has
  served 2,000 POST /order through its test client, with and without freezing the heap first.

Each prints one line; the numbers move with the machine, so compare lines from the same run.
"""
from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import pika

from inventory_service import config as inventory_config
from inventory_service.store import InventoryStore
from inventory_service.unit_of_work import InventoryUnitOfWork
from messaging import events
from messaging.amqp.delivery import Delivery
from order_service import config as order_config
from order_service import handlers
from order_service.app import create_app
from order_service.store import OrderStore

BODY = {"user_id": "user1", "item": "Burger", "quantity": 1}


def _settings(loader: Callable, directory: str):
    return loader({**os.environ, "DATA_DIR": directory, "LOG_LEVEL": "WARNING"})


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return (f"p50 {at(0.5):.3f}  p99 {at(0.99):.3f}  p99.9 {at(0.999):.3f}  "
            f"max {values[-1]:.3f}  mean {statistics.mean(values):.3f} ms")


def commit_latency(background: bool, count: int = 5000) -> str:
    with tempfile.TemporaryDirectory(dir=os.environ.get("DATA_DIR", ".")) as directory:
        settings = _settings(order_config.load, directory)
        store = OrderStore.open(settings.storage)
        if background:
            store.start_checkpoints()
        took = []
        for _ in range(count):
            order, message = handlers.place(handlers.validate(BODY), events.utc_now())
            start = time.perf_counter()
            store.add(order, message)
            took.append((time.perf_counter() - start) * 1000)
        store.stop_checkpoints()
        store.close()
    where = "background thread" if background else "inside commits"
    return f"commit, checkpoints {where}: {count} OrderStore.add  {_percentiles(took)}"


class _Relay:
    """What the consumer needs of a relay: a claimant name and somewhere to hand rows."""

    def claimant(self) -> str:
        return "micro"

    def hand_over(self, rows: list) -> None:
        pass


def inventory_handler(batches: int = 50, size: int = 100) -> str:
    with tempfile.TemporaryDirectory(dir=os.environ.get("DATA_DIR", ".")) as directory:
        settings = _settings(inventory_config.load, directory)
        store = InventoryStore.open(settings.storage)
        store.seed(settings.menu, 10**9)
        unit_of_work = InventoryUnitOfWork(store, 0.9, _Relay())
        work = []
        for _ in range(batches):
            batch = []
            for tag in range(1, size + 1):
                order, message = handlers.place(handlers.validate(BODY), events.utc_now())
                batch.append(Delivery(tag, "orders", "order.placed", False,
                                      pika.BasicProperties(message_id=message.message_id),
                                      message.body))
            work.append(batch)
        start = time.process_time()
        for batch in work:
            unit_of_work.handle_batch(batch)
        used = time.process_time() - start
        store.close()
    per_message = used / (batches * size) * 1e6
    return f"inventory: handle_batch, {batches} batches of {size}: {per_message:.1f} us CPU/message"


def gc_pauses(freeze: bool, requests: int = 2000) -> str:
    with tempfile.TemporaryDirectory(dir=os.environ.get("DATA_DIR", ".")) as directory:
        settings = _settings(order_config.load, directory)
        client = create_app(settings).test_client()
        body = json.dumps(BODY)
        for _ in range(requests):
            client.post("/order", data=body, content_type="application/json")
        gc.collect()
        if freeze:
            gc.freeze()
        took = []
        try:
            for _ in range(5):
                start = time.perf_counter()
                gc.collect()
                took.append((time.perf_counter() - start) * 1000)
            walked = len(gc.get_objects())
        finally:
            gc.unfreeze()
    return (f"gc, heap {'frozen' if freeze else 'not frozen'}: a full collection after "
            f"{requests} requests takes {statistics.median(took):.3f} ms (median of 5) and walks "
            f"{walked} objects")


def main() -> int:
    print(commit_latency(background=False), flush=True)
    print(commit_latency(background=True), flush=True)
    print(inventory_handler(), flush=True)
    print(gc_pauses(freeze=False), flush=True)
    print(gc_pauses(freeze=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
