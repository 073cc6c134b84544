"""CPU per order at fixed low rates, where a campus spends most of its day, beside the saturated cost.

For each rate the open loop offers POST /order to the bare endpoint, then to OrderService, for the
same seconds; an OrderService window lasts until every order it placed is final. The CPU seconds
of every process tree (gunicorn master and workers, each consumer, RabbitMQ's `beam.smp`, the
bench's own process) are read before and after each window and divided by the orders accepted in
it. Nothing is subtracted: the idle CPU of the same processes over a window of the same length with
no load is shown beside it, so a reader can see how much of a low rate's cost is the idle floor.
"""
from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from bench.loadgen import open_loop
from bench.procstats import TICKS, CpuMeter
from bench.summary import run_summary

if TYPE_CHECKING:
    from bench.runner import Run

PIPELINE = ("order", "inventory", "notification", "rabbitmq")  # what one order passes through
KEEPALIVE_S = 5.0  # gunicorn's keep-alive (order_service.__main__): an idle connection is closed after


def cpu_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process tree used between two CpuMeter snapshots (never negative)."""
    return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}


def ms_per_order(deltas: dict[str, float], orders: int,
                 total_of: tuple[str, ...] = PIPELINE) -> dict[str, float | None]:
    """Milliseconds of CPU per order of each tree, and `total` over the trees in `total_of`."""
    per = {name: round(seconds * 1000 / orders, 3) if orders else None
           for name, seconds in deltas.items()}
    present = [deltas[name] for name in total_of if name in deltas]
    per["total"] = round(sum(present) * 1000 / orders, 3) if orders and present else None
    return per


def tick_ms(orders: int) -> float | None:
    """What one clock tick of a process's CPU time (/proc counts in ticks) is per order: the
    resolution of each process's figure over a window of `orders` orders."""
    return round(1000 / TICKS / orders, 3) if orders else None


def saturated(closed_order: dict[str, Any]) -> dict[str, Any]:
    """The same figure at saturation, from the closed loop's cores and its accepted orders/s."""
    rps, cores = closed_order.get("achieved_rps"), closed_order.get("cpu_cores", {})
    per = {name: round(used * 1000 / rps, 3) if rps else None for name, used in cores.items()}
    present = [cores[name] for name in PIPELINE if name in cores]
    per["total"] = round(sum(present) * 1000 / rps, 3) if rps and present else None
    return {"rate": rps, "cpu_ms_per_order": per, "cpu_cores": cores}


def connections_for(rate: float, most: int) -> int:
    """Enough keep-alive connections for `rate`, few enough that none idles into the server's
    keep-alive timeout (each gets a request about every connections/rate seconds)."""
    return max(1, min(most, math.ceil(rate / 10), math.floor(rate * KEEPALIVE_S / 2)))


class LowRates:
    """The low-rate phase of one Run: idle window, then each rate on the bare endpoint and on
    OrderService."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.o = run.o

    def measure(self) -> dict[str, Any]:
        duration = self.o.lowrate_duration
        self._warm_up()
        result: dict[str, Any] = {"duration_s": duration, "idle": self.idle(duration),
                                  "bare": [], "order": []}
        for rate in self.o.lowrate_rates:
            result["bare"].append(self.step("bare", rate, duration))
            result["order"].append(self.step("order", rate, duration))
        return result

    def _warm_up(self) -> None:
        """A second of orders to each target first (less when the windows are shorter), so no
        window pays for a first request."""
        seconds = min(1.0, self.o.lowrate_duration)
        for target in ("bare", "order"):
            self.run.load(open_loop, self._url(target), 20, seconds, f"{target} low warm-up", 2)
        self.run.api.wait_settled(self.o.settle_timeout)

    def idle(self, seconds: float) -> dict[str, Any]:
        """Cores each process tree uses with no load, over `seconds`."""
        meter = self._meter()
        before, start = meter.snapshot(), time.perf_counter()
        time.sleep(seconds)
        after, wall = meter.snapshot(), time.perf_counter() - start
        return {"window_s": round(wall, 3), "cpu_cores": CpuMeter.used(before, after, wall)}

    def step(self, target: str, rate: int, duration: float) -> dict[str, Any]:
        """Offer `rate` orders/s for `duration` s; CPU per accepted order over the whole window."""
        meter = self._meter()
        before, start = meter.snapshot(), time.perf_counter()
        outcome = open_loop(self._url(target), rate, duration, f"{target} low@{rate}/s",
                            connections_for(rate, self.o.connections))
        settle = None
        if target == "order":
            self.run.labels.update((oid, outcome.label) for oid in outcome.order_ids)
            settle = self.run.api.wait_settled(self.o.settle_timeout)
        after, wall = meter.snapshot(), time.perf_counter() - start
        row = run_summary(outcome)
        deltas = cpu_deltas(before, after)
        total_of = ("bare",) if target == "bare" else PIPELINE
        row.update({"rate": rate, "window_s": round(wall, 3), "settle_s": settle and round(settle, 3),
                    "cpu_s": {name: round(s, 4) for name, s in deltas.items()},
                    "cpu_ms_per_order": ms_per_order(deltas, row["accepted"], total_of),
                    "tick_ms_per_order": tick_ms(row["accepted"]),
                    "cpu_cores": CpuMeter.used(before, after, wall)})
        print(f"  [{row['label']}] {row['accepted']} accepted in {wall:.1f} s: "
              f"{row['cpu_ms_per_order']['total']} ms CPU per order", file=sys.stderr, flush=True)
        return row

    def _meter(self) -> CpuMeter:
        return CpuMeter(self.run._pids())

    def _url(self, target: str) -> str:
        return self.run.env.bare.url if target == "bare" else self.run.env.stack.order_url
