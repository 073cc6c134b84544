"""The benchmark's phases, run in order inside one Environment, each adding to the results."""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench import amqp_baseline, drain, lowrate
from bench.cli import Options
from bench.environment import Environment
from bench.loadgen import Outcome, closed_loop, open_loop
from bench.orders_api import OrderApi
from bench.procstats import CpuMeter, rss_bytes
from bench.summary import FINAL, e2e_summary, run_summary
from messaging import topology


class Run:
    """One benchmark run: call full(), then read `results` (bench.soak.SoakRun adds soak())."""

    def __init__(self, options: Options, env: Environment, results: dict[str, Any]) -> None:
        self.o, self.env, self.results = options, env, results
        self.api = OrderApi(env.stack.order_url)
        self.labels: dict[str, str] = {}  # order_id -> the run that placed it
        self.meter = CpuMeter({})
        results.setdefault("phases_s", {})

    # --- the full run ---

    def full(self) -> None:
        """Low rates, baselines, closed-loop maxima, the open-loop sweep, the drain, and the final
        checks; with `--only lowrate`, the low rates, the closed loop and the checks."""
        self.results["rss"] = {"start": self.rss()}
        with self.phase("lowrate"):  # first, while the databases are small and the machine quiet
            self.results["lowrate"] = lowrate.LowRates(self).measure()
        if self.o.only != "lowrate":
            with self.phase("amqp_baseline"):
                self.amqp()
        with self.phase("closed_loop"):
            self.closed()
        self.results["lowrate"]["saturated"] = lowrate.saturated(self.results["closed_loop"]["order"])
        if self.o.only == "lowrate":
            with self.phase("verify"):
                self.verify()
            return
        with self.phase("sweep"):
            self.sweep()
        self.results["rss"]["end"] = self.rss()  # before the drain restarts InventoryService
        self.results["disk"] = {"end": self.disk()}
        with self.phase("drain"):
            self.backlog_drain()
        with self.phase("verify"):
            self.verify()

    # --- phases ---

    def amqp(self) -> None:
        self.results["amqp_baseline"] = amqp_baseline.measure(
            self.env.broker, self.env.scratch_vhost, self.o.raw_messages,
            queue_type=self.env.queue_type)

    def closed(self) -> None:
        c, d = self.o.concurrency, self.o.duration
        bare = self.load(closed_loop, self.env.bare.url, c, "bare closed", duration=d)
        order = self.load(closed_loop, self.env.stack.order_url, c, "order closed", duration=d)
        order["settle_s"] = round(self.api.wait_settled(self.o.settle_timeout), 3)
        self.results["closed_loop"] = {"bare": bare, "order": order}
        per_request = bare["generator_us_per_request"]
        self.results["generator"] = {
            "cpu_us_per_request": per_request,
            "ceiling_rps_on_one_core": round(1e6 / per_request) if per_request else None,
            "cores_used_at_bare_max": bare["cpu_cores"]["bench"],
            "bare_max_rps": bare["achieved_rps"]}

    def sweep(self) -> None:
        rows: dict[str, list] = {"bare": [], "order": []}
        urls = {"bare": self.env.bare.url, "order": self.env.stack.order_url}
        live = {"bare": True, "order": True}
        self.results["sweep"] = rows
        for rate in self.o.rates:
            for target in [t for t in ("bare", "order") if live[t]]:
                row = self.load(open_loop, urls[target], rate, self.o.duration,
                                f"{target}@{rate}/s", self.o.connections)
                if target == "order":
                    row["settle_s"] = round(self.api.wait_settled(self.o.settle_timeout), 3)
                rows[target].append(row)
                live[target] = not row["saturated"]
            if not any(live.values()):
                break
        steady = [r["generator_loop_lag_ms"]["p99"] for rs in rows.values() for r in rs
                  if not r["saturated"]]
        self.results.setdefault("generator", {})["worst_loop_lag_p99_ms_unsaturated"] = max(
            (lag for lag in steady if lag is not None), default=None)

    def backlog_drain(self) -> None:
        post, flush_s = drain.queue_orders(self.env, self.api, self.o.drain_orders,
                                           self.o.concurrency, self.o.settle_timeout)
        self._label(post)
        curve = drain.drain(self.env, self.api, self.o.settle_timeout)
        self.results["drain"] = {"post": run_summary(post), "outbox_flush_s": round(flush_s, 3),
                                 **curve}

    def verify(self) -> None:
        """Every order we got a 202 for must exist and be final; nothing may sit in a DLQ."""
        waited = self.api.wait_settled(self.o.settle_timeout)
        stored = {order["order_id"]: order for order in self.api.all_orders()}
        lost = [oid for oid in self.labels if oid not in stored]
        pending = [oid for oid in self.labels if oid in stored
                   and stored[oid]["status"] not in FINAL]
        groups: dict[str, list] = {}
        for oid, label in self.labels.items():
            if oid in stored:
                groups.setdefault(label, []).append(stored[oid])
        self.results["e2e"] = {label: e2e_summary(orders) for label, orders in groups.items()}
        self.results["verify"] = {
            "accepted": len(self.labels), "stored": len(stored), "lost": len(lost),
            "not_final": len(pending), "lost_sample": lost[:10],
            "stored_without_our_202": len(stored.keys() - self.labels.keys()),
            "settle_s": round(waited, 3),
            "dead_letters": {q.name: self.env.broker.depth(self.env.vhost, q.name)
                             for q in topology.DEAD_LETTER_QUEUES}}

    # --- measuring ---

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"== {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            yield
        finally:
            self.results["phases_s"][name] = round(time.monotonic() - start, 3)

    def load(self, run_load: Callable[..., Outcome], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run a load function; summarise it with the CPU each process tree used meanwhile."""
        self.meter.pids = self._pids()
        before, start = self.meter.snapshot(), time.perf_counter()
        run = run_load(*args, **kwargs)
        row = run_summary(run)
        row["cpu_cores"] = CpuMeter.used(before, self.meter.snapshot(), time.perf_counter() - start)
        if args and args[0] == self.env.stack.order_url:
            self._label(run)
        return row

    def _label(self, run: Outcome) -> None:
        self.labels.update((order_id, run.label) for order_id in run.order_ids)

    def _pids(self) -> dict[str, int | None]:
        return self.env.pids()

    def disk(self) -> dict[str, dict[str, int]]:
        """Bytes of each service's SQLite files: the databases and their write-ahead logs."""
        return {name: {kind: sum(f.stat().st_size for f in self.env.stack[name].data_dir.glob(pattern))
                       for kind, pattern in (("db", "*.db"), ("wal", "*.db-wal"))}
                for name in ("order", "inventory", "notification")}

    def rss(self) -> dict[str, int]:
        """Resident bytes of each service (gunicorn: master plus workers)."""
        return {name: rss_bytes(pid) for name, pid in self._pids().items()
                if pid and not name.startswith("rabbitmq")}
