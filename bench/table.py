"""The results as plain-text tables for the terminal."""
from __future__ import annotations

from typing import Any

from bench.stats import ratio

MB = 1024 * 1024


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _lat(summary: dict[str, Any] | None) -> list[str]:
    summary = summary or {}
    return [_n(summary.get(k)) for k in ("p50", "p95", "p99", "max")]


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def render(results: dict[str, Any]) -> str:
    """Every section the results hold, as text."""
    out: list[str] = []
    if results.get("error"):
        out += [f"PARTIAL RESULTS, the run stopped early: {results['error']}", ""]
    out += _headline(results.get("headline", {}))
    if "closed_loop" in results:
        out += ["", "Closed loop (max throughput, latency from send, ms):"]
        rows = [[name, _n(r["concurrency"]), _n(r["achieved_rps"]), *_lat(r["latency_ms"]),
                 _n(r["failed"]), _n(r["generator_us_per_request"])]
                for name, r in results["closed_loop"].items()]
        out += _grid(["target", "clients", "req/s", "p50", "p95", "p99", "max", "failed",
                      "gen us/req"], rows)
    if "generator" in results:
        g = results["generator"]
        out += ["", f"Generator: {_n(g.get('cpu_us_per_request'))} us CPU per request, so about "
                    f"{_n(g.get('ceiling_rps_on_one_core'))} req/s on one free core; it used "
                    f"{_n(g.get('cores_used_at_bare_max'), 2)} cores while the bare endpoint did "
                    f"{_n(g.get('bare_max_rps'))} req/s; its own wake-up lag (p99, worst unsaturated "
                    f"step) {_n(g.get('worst_loop_lag_p99_ms_unsaturated'))} ms"]
    if "amqp_baseline" in results:
        raw = results["amqp_baseline"]
        out += ["", f"Raw pika: publish {_n(raw['publish']['per_s'])}/s "
                    f"({raw['publish']['client']}, window {raw['publish']['window']}); "
                    f"consume+ack {_n(raw['consume']['per_s'])}/s "
                    f"(prefetch {raw['consume']['prefetch']}, {raw['consume']['messages']} msgs); "
                    f"medians of rounds {raw['publish'].get('rounds_per_s')} and "
                    f"{raw['consume'].get('rounds_per_s')}"]
    if results.get("sweep"):
        out += ["", "Open-loop sweep (latency from the scheduled send time, ms; * = saturated):"]
        out += _sweep(results["sweep"], results.get("e2e", {}))
    if results.get("e2e"):
        out += ["", "End to end (updated_at - created_at, ms; orders/s = final orders / span):"]
        rows = [[label, _n(e["final"]), *_lat(e["latency_ms"]), _n(e.get("orders_per_s"))]
                for label, e in results["e2e"].items()]
        out += _grid(["run", "orders", "p50", "p95", "p99", "max", "orders/s"], rows)
    if "drain" in results:
        d = results["drain"]
        out += ["", f"Drain: {d['queued']} queued; first taken after {_n(d['startup_s'], 2)} s; "
                    f"empty after {_n(d['empty_s'], 2)} s; all final after {_n(d['all_final_s'], 2)} s; "
                    f"drain {_n(d['drain_per_s'])}/s; to final {_n(d['final_per_s'])}/s"]
    out += _memory(results)
    out += _cpu(results)
    out += lowrate(results.get("lowrate"))
    if "verify" in results:
        v = results["verify"]
        out += ["", f"Verify: {v['accepted']} accepted, {v['stored']} stored, {v['lost']} lost, "
                    f"{v['not_final']} not final, dead letters {v['dead_letters']}"]
    if "phases_s" in results:
        out += ["", "Phases (s): " + ", ".join(f"{k} {_n(v)}" for k, v in results["phases_s"].items())]
    return "\n".join(out)


def _headline(figures: dict[str, Any]) -> list[str]:
    rows = [[name, _n(f["value"], 3), f["target"], {True: "yes", False: "NO", None: "-"}[f["met"]]]
            for name, f in figures.items()]
    if not rows:
        return []
    out = ["Headline (ratios to same-machine baselines):",
           *_grid(["figure", "value", "target", "met"], rows)]
    p99 = figures.get("p99_vs_bare_p99")
    if p99:
        up_to = p99.get("within_target_up_to_rate")
        out.append(f"p99 at {_n(p99['at_rate'])}/s, the highest rate neither saturates; "
                   + (f"within {p99['target'].split()[-1]}x of bare at every rate up to {_n(up_to)}/s"
                      if up_to is not None else "above the target at the lowest rate already"))
    return out


def _sweep(sweep: dict[str, list], e2e: dict[str, Any]) -> list[str]:
    bare = {r["offered_rps"]: r for r in sweep.get("bare", [])}
    order = {r["offered_rps"]: r for r in sweep.get("order", [])}
    rows = []
    for rate in sorted(bare.keys() | order.keys()):
        b, o = bare.get(rate), order.get(rate)
        e = (e2e.get(o["label"]) or {}) if o else {}
        rows.append([str(rate),
                     (_n(b["achieved_rps"]) + ("*" if b["saturated"] else "")) if b else "-",
                     *(_lat(b["latency_ms"]) if b else ["-"] * 4),
                     (_n(o["achieved_rps"]) + ("*" if o["saturated"] else "")) if o else "-",
                     *(_lat(o["latency_ms"]) if o else ["-"] * 4),
                     _n(ratio(o["latency_ms"]["p99"], b["latency_ms"]["p99"]) if o and b else None),
                     *_lat(e.get("latency_ms"))[:3], _n(e.get("orders_per_s"))])
    return _grid(["offered", "bare/s", "p50", "p95", "p99", "max", "order/s", "p50", "p95", "p99",
                  "max", "p99 x", "e2e p50", "e2e p95", "e2e p99", "e2e/s"], rows)


def _memory(results: dict[str, Any]) -> list[str]:
    rss = results.get("rss")
    if rss and "end" in rss:
        rows = [[name, _n(rss["start"][name] / MB), _n(rss["end"][name] / MB),
                 _n((rss["end"][name] - rss["start"][name]) / MB)] for name in rss["start"]]
        disk = results.get("disk", {}).get("end", {})
        rows = [row + [_n(disk[row[0]]["db"] / MB), _n(disk[row[0]]["wal"] / MB)] if row[0] in disk
                else row + ["-", "-"] for row in rows]
        return ["", "RSS and SQLite files (MB, before the drain restarts InventoryService):",
                *_grid(["service", "start", "end", "growth", "db", "WAL"], rows)]
    soak = results.get("soak")
    if soak:
        names = list(soak["series"][0]["rss"])
        wals = [n for n in names if n in soak["series"][-1].get("disk", {})]
        rows = [[_n(point["orders"]), _n(point.get("post", {}).get("achieved_rps")),
                 _n(point.get("post", {}).get("latency_ms", {}).get("p99")),
                 *[_n(point["rss"][n] / MB) for n in names],
                 *[_n(point["disk"][n]["wal"] / MB) if "disk" in point else "-" for n in wals]]
                for point in soak["series"]]
        return ["", f"Soak at {_n(soak['rate'])} orders/s, RSS and WAL files in MB "
                    "(the last row: all final):",
                *_grid(["orders", "POST/s", "p99 ms", *names, *[f"{n} WAL" for n in wals]], rows)]
    return []


def _cpu(results: dict[str, Any]) -> list[str]:
    runs = [*results.get("closed_loop", {}).values(), *results.get("sweep", {}).get("order", [])]
    if not runs:
        return []
    names = list(runs[0]["cpu_cores"])
    rows = [[r["label"], *[_n(r["cpu_cores"].get(n), 2) for n in names]] for r in runs]
    return ["", "CPU cores used during each run (1.0 = one core busy):", *_grid(["run", *names], rows)]


LOWRATE_COLUMNS = ("order", "inventory", "notification", "rabbitmq", "total", "bench")


def lowrate(low: dict[str, Any] | None) -> list[str]:
    """CPU per order at each fixed low rate and at saturation, the bare endpoint's per request
    beside it, and the idle cores of the same processes."""
    if not low:
        return []
    bare = {r["rate"]: r for r in low.get("bare", [])}
    rows = []
    for r in low.get("order", []):
        b = bare.get(r["rate"], {})
        rows.append([_n(r["rate"]), _n(r["accepted"]), _n(r["window_s"]),
                     *[_n(r["cpu_ms_per_order"].get(n), 2) for n in LOWRATE_COLUMNS],
                     _n(b.get("cpu_ms_per_order", {}).get("bare"), 2),
                     _n(r["latency_ms"]["p50"]), _n(r["latency_ms"]["p99"]),
                     _n(r.get("tick_ms_per_order"), 2)])
    sat = low.get("saturated")
    if sat:
        rows.append([f"{_n(sat['rate'])} (closed loop)", "-", "-",
                     *[_n(sat["cpu_ms_per_order"].get(n), 2) for n in LOWRATE_COLUMNS], "-", "-", "-",
                     "-"])
    idle = low.get("idle", {})
    cores = ", ".join(f"{name} {_n(used, 3)}" for name, used in idle.get("cpu_cores", {}).items())
    return ["", "CPU per order at fixed rates (ms of CPU per accepted order, over the load and the "
                "wait until final; total = the three services and RabbitMQ; bench = the generator; "
                "1 tick = one clock tick of a process's CPU time per order, the resolution):",
            *_grid(["rate/s", "orders", "window s", *LOWRATE_COLUMNS, "bare ms/req", "p50 ms",
                    "p99 ms", "1 tick"], rows),
            f"Idle, no load, over {_n(idle.get('window_s'))} s (cores): {cores}"]


def side_by_side(compared: dict[str, Any]) -> list[str]:
    """One row per figure, one column per configuration, then each one's ratio to SQLite."""
    names = list(compared["figures"])
    ratio_names = list(compared["ratios"])
    rows = []
    for metric, meta in compared["metrics"].items():
        digits = 3 if meta["unit"] == "ratio" else 1
        rows.append([f"{meta['label']}, {meta['unit']}",
                     *[_n(compared["figures"][name][metric], digits) for name in names],
                     *[_n(compared["ratios"][r].get(metric), 2) for r in ratio_names]])
    out = ["Backends side by side (each with its own same-run baselines; ratios to "
           f"{compared['base']}):",
           *_grid(["figure", *names, *[f"{r.replace('/', ' / ')}" for r in ratio_names]], rows)]
    verdicts = {True: "met", False: "NOT met", None: "not measured"}
    for name, t in compared["targets"].items():
        out.append(f"target {name} {t['target']}: {_n(t['value'], 3)} ({verdicts[t['met']]})")
    return out


def render_configs(results: dict[str, Any]) -> str:
    """A run of several configurations: each one's tables, then the side-by-side comparison."""
    out: list[str] = []
    for name, run in results.get("configs", {}).items():
        out += [f"===== {name}: {run.get('setup', {})}", render(run), ""]
    if results.get("error"):
        out += [f"PARTIAL RESULTS, the run stopped early: {results['error']}", ""]
    if results.get("side_by_side"):
        out += side_by_side(results["side_by_side"])
    return "\n".join(out)
