"""The results as a PNG: latency percentiles vs offered rate, and the drain curve."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], path: Path) -> Path:
    """Draw both panels into `path` (needs matplotlib: pip install -r bench/requirements.txt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, backlog) = plt.subplots(1, 2, figsize=(14, 5.5))
    _latency_panel(latency, results.get("sweep") or {})
    _drain_panel(backlog, results.get("drain"))
    fig.suptitle(f"OrderService vs baselines, {results.get('started_at', '')} "
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
    ax.set_xlabel("offered rate (requests/s, open loop)")
    ax.set_ylabel("202 latency from scheduled send (ms)")
    ax.set_title("POST /order latency vs offered rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _drain_panel(ax, drain: dict[str, Any] | None) -> None:
    ax.set_title("Backlog drain after InventoryService restart")
    if not drain:
        ax.text(0.5, 0.5, "no drain measured", ha="center", transform=ax.transAxes)
        return
    curve = drain["curve"]
    ax.plot(curve["t_s"], curve["order_events"], label="order-events (ready)")
    ax.plot(curve["t_s"], curve["order_status"], label="order-status (ready)")
    for key, text in (("startup_s", "first taken"), ("empty_s", "empty"),
                      ("all_final_s", "all final")):
        if drain.get(key) is not None:
            ax.axvline(drain[key], color="grey", linestyle=":", linewidth=1)
            ax.annotate(text, (drain[key], drain["queued"] * 0.95), fontsize=7, rotation=90)
    ax.set_xlabel("seconds since InventoryService was started")
    ax.set_ylabel("messages in queue")
    ax.text(0.98, 0.9, f"drain {drain['drain_per_s']}/s", ha="right", transform=ax.transAxes)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
