"""The results as a PNG: latency percentiles vs offered rate, and the drain curve."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], path: Path) -> Path:
    """Draw both panels into `path` (needs matplotlib: pip install -r bench/requirements.txt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    if results.get("soak"):
        _soak_panels(left, right, results["soak"])
    else:
        _latency_panel(left, results.get("sweep") or {})
        _drain_panel(right, results.get("drain"))
    title = "OrderService soak" if results.get("soak") else "OrderService vs baselines"
    fig.suptitle(f"{title}, {results.get('started_at', '')} "
                 f"({results.get('machine', {}).get('cpus', '?')} cores, shared)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency_panel(ax, sweep: dict[str, list]) -> None:
    styles = {"bare": "--", "order": "-"}
    colours = {"p50": "tab:green", "p95": "tab:orange", "p99": "tab:red"}
    for target, rows in sweep.items():
        if not rows:
            continue
        rates = [row["offered_rps"] for row in rows]
        for q, colour in colours.items():
            ax.plot(rates, [row["latency_ms"][q] for row in rows], styles[target], color=colour,
                    marker="o", label=f"{'OrderService' if target == 'order' else 'bare'} {q}")
        for row in rows:
            if row["saturated"]:
                ax.annotate("saturated", (row["offered_rps"], row["latency_ms"]["p99"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    rates = sorted({row["offered_rps"] for rows in sweep.values() for row in rows})
    if rates:
        ax.set_xticks(rates, [str(int(rate)) for rate in rates])
        ax.minorticks_off()
    ax.set_xlabel("offered rate (requests/s, open loop)")
    ax.set_ylabel("202 latency from scheduled send (ms)")
    ax.set_title("POST /order latency vs offered rate")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _drain_panel(ax, drain: dict[str, Any] | None) -> None:
    ax.set_title("Backlog drain after InventoryService restart")
    if not drain:
        ax.text(0.5, 0.5, "no drain measured", ha="center", transform=ax.transAxes)
        return
    curve = drain["curve"]
    ax.plot(curve["t_s"], curve["order_events"], label="order-events (ready)")
    ax.plot(curve["t_s"], curve["order_status"], label="order-status (ready)")
    marks = (("startup_s", "first taken", 0.9), ("empty_s", "queue empty", 0.6),
             ("all_final_s", "all final", 0.3))
    for key, text, height in marks:
        if drain.get(key) is not None:
            ax.axvline(drain[key], color="grey", linestyle=":", linewidth=1)
            ax.annotate(text, (drain[key], drain["queued"] * height), fontsize=7, rotation=90,
                        xytext=(-9, 0), textcoords="offset points")
    ax.set_xlabel("seconds since InventoryService was started")
    ax.set_ylabel("messages in queue")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title=f"{drain['queued']} queued, drained at {drain['drain_per_s']}/s",
              title_fontsize=8, loc="upper right")


def _soak_panels(memory, latency, soak: dict[str, Any]) -> None:
    series = soak["series"]
    orders = [point["orders"] for point in series]
    for name in series[0]["rss"]:
        memory.plot(orders, [point["rss"][name] / 2**20 for point in series], marker="o", label=name)
    memory.set_title(f"RSS during the soak ({soak['orders']} orders at {soak['rate']:.0f}/s)")
    memory.set_xlabel("orders posted")
    memory.set_ylabel("RSS (MB, process and children)")
    memory.grid(True, alpha=0.3)
    memory.legend(fontsize=8)
    chunks = [point for point in series if "post" in point]
    for q, colour in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        latency.plot([p["orders"] for p in chunks], [p["post"]["latency_ms"][q] for p in chunks],
                     marker="o", color=colour, label=q)
    latency.set_title("POST /order latency per tenth of the soak")
    latency.set_xlabel("orders posted")
    latency.set_ylabel("latency from scheduled send (ms)")
    latency.set_yscale("log")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=8)
