"""Backlog drain: InventoryService stopped, N orders queued in order-events, then started again.

The queue depth is sampled from the moment the process is started, which gives the drain curve;
the drain rate counts from the first message taken to the queue being empty, so process start-up
is reported apart (startup_s).
"""
from __future__ import annotations

import sys
import time
from typing import Any

from bench.environment import Environment
from bench.loadgen import Outcome, closed_loop
from bench.orders_api import OrderApi
from messaging import topology

SAMPLE_EVERY = 0.05


def queue_orders(env: Environment, api: OrderApi, orders: int, concurrency: int,
                 timeout: float) -> tuple[Outcome, float]:
    """Stop InventoryService, post `orders`, wait until the outbox is flushed into order-events."""
    api.wait_settled(timeout)
    env.stack["inventory"].terminate()
    run = closed_loop(env.stack.order_url, concurrency, "drain-post", count=orders)
    started = time.monotonic()
    accepted = sum(1 for status in run.status if status == 202)
    while (api.outbox_backlog() > 0
           or env.broker.depth(env.vhost, topology.ORDER_EVENTS.name) < accepted):
        if time.monotonic() - started > timeout:
            raise TimeoutError("OrderService's outbox did not flush into order-events")
        time.sleep(0.1)
    return run, time.monotonic() - started


def drain(env: Environment, api: OrderApi, timeout: float) -> dict[str, Any]:
    """Start InventoryService and sample the queues until order-events is empty and all is final."""
    curve: list[tuple[float, int, int]] = []
    first_taken = empty_at = final_at = None
    with env.broker.channel(env.vhost) as channel:
        def depth(queue: topology.Queue) -> int:
            return channel.queue_declare(queue=queue.name, passive=True).method.message_count

        queued = depth(topology.ORDER_EVENTS)
        env.stack["inventory"].start()
        t0 = time.perf_counter()
        next_print = 1.0
        while final_at is None:
            now = time.perf_counter() - t0
            events, statuses = depth(topology.ORDER_EVENTS), depth(topology.ORDER_STATUS)
            curve.append((round(now, 3), events, statuses))
            if first_taken is None and events < queued:
                first_taken = now
            if empty_at is None and events == 0:
                empty_at = now
            if empty_at is not None and statuses == 0 and api.pending() == 0:
                final_at = now
            if now >= next_print:
                print(f"  [drain] {now:5.1f}s  order-events {events}  order-status {statuses}",
                      file=sys.stderr, flush=True)
                next_print += 1.0
            if now > timeout:
                raise TimeoutError(f"order-events still holds {events} after {timeout:.0f}s")
            time.sleep(SAMPLE_EVERY)
    env.stack["inventory"].wait_healthy(30)
    consuming = (max(empty_at - first_taken, SAMPLE_EVERY) if first_taken is not None
                 else None)
    return {
        "queued": queued, "startup_s": _round(first_taken), "empty_s": _round(empty_at),
        "all_final_s": _round(final_at),
        "drain_per_s": round(queued / consuming, 1) if consuming else None,
        "final_per_s": (round(queued / max(final_at - first_taken, SAMPLE_EVERY), 1)
                        if first_taken is not None else None),
        "sample_every_s": SAMPLE_EVERY,
        "curve": {"t_s": [c[0] for c in curve], "order_events": [c[1] for c in curve],
                  "order_status": [c[2] for c in curve]},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
