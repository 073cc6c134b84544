"""Turn raw measurements into report rows: one load run, and orders' end-to-end times."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bench.loadgen import Outcome
from bench.stats import is_saturated, summarize

FINAL = ("reserved", "failed")


def run_summary(run: Outcome) -> dict[str, Any]:
    """Throughput, latency (from the due time), service time, send lag and generator CPU of a run."""
    ok = [i for i, status in enumerate(run.status) if status == 202]
    last = max(run.done, default=0.0)
    span = max(run.duration, last) if run.mode == "open" else last
    achieved = len(ok) / span if span else 0.0
    failed = len(run.status) - len(ok) + run.unsent + run.timed_out
    latency = summarize(run.done[i] - run.due[i] for i in ok)
    row: dict[str, Any] = {
        "label": run.label, "mode": run.mode, "offered_rps": run.offered,
        "concurrency": run.concurrency, "duration_s": run.duration,
        "scheduled": run.scheduled, "answered": len(run.status), "accepted": len(ok),
        "failed": failed, "unsent": run.unsent, "timed_out": run.timed_out,
        "errors_by_status": _count(s for s in run.status if s != 202),
        "achieved_rps": round(achieved, 1), "span_s": round(span, 3),
        "latency_ms": latency,
        "service_ms": summarize(run.done[i] - run.sent[i] for i in ok),
        "send_lag_ms": summarize(run.sent[i] - run.due[i] for i in ok),
        "generator_loop_lag_ms": summarize(run.loop_lag),
        "generator_cpu_s": round(run.cpu_seconds, 3),
        "generator_cpu_share": round(run.cpu_seconds / run.wall_seconds, 3) if run.wall_seconds else None,
        "generator_us_per_request": (round(run.cpu_seconds / len(run.status) * 1e6, 1)
                                     if run.status else None),
    }
    if run.mode == "open":
        row["saturated"] = is_saturated(run.offered or 0.0, achieved, latency["p99"], failed,
                                        run.scheduled)
    return row


def _count(values: Iterable[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def stamp(text: str) -> float:
    """Unix seconds of an ISO-8601 UTC stamp such as 2026-11-27T06:02:31.548397Z."""
    return datetime.fromisoformat(text).timestamp()


def e2e_summary(orders: list[dict[str, Any]]) -> dict[str, Any]:
    """End-to-end latency (updated_at - created_at of final orders) and orders/s until the last."""
    final = [o for o in orders if o["status"] in FINAL]
    times = [(stamp(o["created_at"]), stamp(o["updated_at"])) for o in final]
    row: dict[str, Any] = {"orders": len(orders), "final": len(final),
                           "reserved": sum(1 for o in final if o["status"] == "reserved"),
                           "latency_ms": summarize(done - created for created, done in times)}
    if times:
        span = max(done for _, done in times) - min(created for created, _ in times)
        row["span_s"] = round(span, 3)
        row["orders_per_s"] = round(len(final) / span, 1) if span > 0 else None
    return row
