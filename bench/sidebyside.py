"""Several configurations of one run side by side: each one's figures, and its ratio to SQLite's.

Each configuration is measured with its own same-run baselines (bare endpoint, raw pika on its
broker), one after another on the same machine; the ratios divide its figure by SQLite's of the
same run.
"""
from __future__ import annotations

from typing import Any

from bench.stats import ratio

BASE = "sqlite"
# name -> (label, unit, higher is better)
METRICS = {
    "post_rps": ("closed-loop POST /order", "req/s", True),
    "bare_rps": ("closed-loop bare endpoint (baseline)", "req/s", True),
    "post_vs_bare": ("POST / bare, same run", "ratio", True),
    "post_p50_ms": ("closed-loop POST p50", "ms", False),
    "post_p99_ms": ("closed-loop POST p99", "ms", False),
    "e2e_orders_per_s": ("end to end, closed loop", "orders/s", True),
    "e2e_p50_ms": ("end-to-end p50", "ms", False),
    "e2e_p99_ms": ("end-to-end p99", "ms", False),
    "drain_per_s": ("backlog drain", "msg/s", True),
    "raw_consume_per_s": ("raw pika consume+ack (baseline)", "msg/s", True),
    "drain_vs_raw": ("drain / raw consume, same run", "ratio", True),
    "accepted": ("orders accepted (202)", "orders", True),
    "lost": ("lost or never final", "orders", False),
}
# (configuration, metric) -> (op, target) on the configuration's ratio to SQLite
# Metrics may cost at most 5 % of the throughput: without them at most 1/0.95 as fast.
TARGETS = {("postgres", "e2e_orders_per_s"): (">=", 0.7),
           ("sqlite-nometrics", "e2e_orders_per_s"): ("<=", 1.053),
           ("sqlite-nometrics", "drain_per_s"): ("<=", 1.053)}


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """The side-by-side figures of one configuration's results (None where it has none)."""
    closed = run.get("closed_loop") or {}
    order, bare = closed.get("order") or {}, closed.get("bare") or {}
    e2e = (run.get("e2e") or {}).get("order closed") or {}
    drain, raw = run.get("drain") or {}, (run.get("amqp_baseline") or {}).get("consume") or {}
    verify = run.get("verify") or {}
    lat, e2e_lat = order.get("latency_ms") or {}, e2e.get("latency_ms") or {}
    return {
        "post_rps": order.get("achieved_rps"), "bare_rps": bare.get("achieved_rps"),
        "post_vs_bare": ratio(order.get("achieved_rps"), bare.get("achieved_rps")),
        "post_p50_ms": lat.get("p50"), "post_p99_ms": lat.get("p99"),
        "e2e_orders_per_s": e2e.get("orders_per_s"),
        "e2e_p50_ms": e2e_lat.get("p50"), "e2e_p99_ms": e2e_lat.get("p99"),
        "drain_per_s": drain.get("drain_per_s"), "raw_consume_per_s": raw.get("per_s"),
        "drain_vs_raw": ratio(drain.get("drain_per_s"), raw.get("per_s")),
        "accepted": verify.get("accepted"),
        "lost": (verify["lost"] + verify["not_final"]) if verify else None,
    }


def compare(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Figures per configuration, each one's ratio to SQLite's, and the targets on those ratios."""
    table = {name: figures(run) for name, run in configs.items()}
    base = table.get(BASE)
    ratios = {}
    if base is not None:
        ratios = {f"{name}/{BASE}": {metric: ratio(values[metric], base[metric])
                                      for metric in METRICS if metric not in ("accepted", "lost")}
                  for name, values in table.items() if name != BASE}
    targets = {}
    for (name, metric), (op, target) in TARGETS.items():
        if name not in table or base is None:
            continue
        value = ratios[f"{name}/{BASE}"][metric]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        targets[f"{name}/{BASE} {metric}"] = {"value": value, "target": f"{op} {target}",
                                              "met": met}
    return {"base": BASE, "figures": table, "ratios": ratios, "targets": targets,
            "metrics": {m: {"label": label, "unit": unit, "higher_is_better": up}
                        for m, (label, unit, up) in METRICS.items()}}
