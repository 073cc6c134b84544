"""The headline figures, each as a ratio to its same-machine baseline, checked against the targets."""
from __future__ import annotations

from typing import Any

from bench.stats import ratio

TARGETS = {
    "post_throughput_vs_bare": (">=", 0.5),
    "p99_vs_bare_p99": ("<=", 2.0),
    "drain_vs_raw_consume": (">=", 0.3),
    "e2e_orders_per_s": (">=", 800.0),
    "lost_orders": ("<=", 0),
    "rss_growth_mb_per_100k_orders": ("<=", 20.0),
}
MB = 1024 * 1024


def _figure(name: str, value: float | None, **detail: Any) -> dict[str, Any]:
    op, target = TARGETS[name]
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": f"{op} {target}", "met": met, **detail}


def p99_by_rate(sweep: dict[str, list]) -> list[dict[str, Any]]:
    """OrderService p99 beside the bare p99 at each offered rate both were measured at."""
    bare = {row["offered_rps"]: row for row in sweep.get("bare", [])}
    rows = []
    for order in sweep.get("order", []):
        base = bare.get(order["offered_rps"])
        if base is None:
            continue
        rows.append({"rate": order["offered_rps"], "order_p99_ms": order["latency_ms"]["p99"],
                     "bare_p99_ms": base["latency_ms"]["p99"],
                     "ratio": ratio(order["latency_ms"]["p99"], base["latency_ms"]["p99"]),
                     "order_saturated": order["saturated"], "bare_saturated": base["saturated"]})
    return rows


def within_target_up_to(fair: list[dict[str, Any]]) -> float | None:
    """The highest rate up to which every unsaturated step kept the p99 within the target ratio."""
    limit = TARGETS["p99_vs_bare_p99"][1]
    highest = None
    for row in sorted(fair, key=lambda r: r["rate"]):
        if row["ratio"] is None or row["ratio"] > limit:
            break
        highest = row["rate"]
    return highest


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Every headline figure the results allow (a soak run has fewer)."""
    figures: dict[str, Any] = {}
    closed = results.get("closed_loop")
    if closed:
        order, bare = closed["order"]["achieved_rps"], closed["bare"]["achieved_rps"]
        figures["post_throughput_vs_bare"] = _figure(
            "post_throughput_vs_bare", ratio(order, bare), order_rps=order, bare_rps=bare)
    if results.get("sweep"):
        by_rate = p99_by_rate(results["sweep"])
        fair = [r for r in by_rate if not r["order_saturated"] and not r["bare_saturated"]]
        chosen = fair[-1] if fair else (by_rate[0] if by_rate else None)
        figures["p99_vs_bare_p99"] = _figure(
            "p99_vs_bare_p99", chosen and chosen["ratio"], at_rate=chosen and chosen["rate"],
            order_p99_ms=chosen and chosen["order_p99_ms"],
            bare_p99_ms=chosen and chosen["bare_p99_ms"],
            worst_unsaturated_ratio=max((r["ratio"] for r in fair if r["ratio"]), default=None),
            within_target_up_to_rate=within_target_up_to(fair), by_rate=by_rate)
    drain, raw = results.get("drain"), results.get("amqp_baseline")
    if drain and raw:
        figures["drain_vs_raw_consume"] = _figure(
            "drain_vs_raw_consume", ratio(drain["drain_per_s"], raw["consume"]["per_s"]),
            drain_per_s=drain["drain_per_s"], raw_consume_per_s=raw["consume"]["per_s"])
    e2e = results.get("e2e", {}).get("order closed")
    if e2e:
        figures["e2e_orders_per_s"] = _figure(
            "e2e_orders_per_s", e2e.get("orders_per_s"), orders=e2e["final"],
            span_s=e2e.get("span_s"),
            ratio_to_post_rps=ratio(e2e.get("orders_per_s"), closed and closed["order"]["achieved_rps"]))
    verify = results.get("verify")
    if verify:
        figures["lost_orders"] = _figure("lost_orders", verify["lost"] + verify["not_final"],
                                         accepted=verify["accepted"])
    soak = results.get("soak")
    if soak:
        figures["rss_growth_mb_per_100k_orders"] = _soak_growth(soak)
    return figures


def _soak_growth(soak: dict[str, Any]) -> dict[str, Any]:
    """RSS growth per service from the first chunk (warm) to the end, scaled to 100,000 orders."""
    series = soak["series"]
    warm, end = series[1], series[-1]
    orders = end["orders"] - warm["orders"]
    growth = {name: round((end["rss"][name] - warm["rss"].get(name, 0)) / MB, 2)
              for name in end["rss"]}
    from_start = {name: round((end["rss"][name] - series[0]["rss"].get(name, 0)) / MB, 2)
                  for name in end["rss"]}
    scaled = {name: round(mb * 100_000 / orders, 2) if orders else None
              for name, mb in growth.items()}
    worst = max((v for v in scaled.values() if v is not None), default=None)
    return _figure("rss_growth_mb_per_100k_orders", worst, growth_mb_after_warmup=growth,
                   growth_mb_from_idle_start=from_start, per_100k_orders=scaled,
                   measured_over_orders=orders)
