"""What open order pages cost POST /order: `python -m bench.pages [--pages 50] [--rate 100]`.

Starts the services (as `python -m bench` does), then offers POST /order on a fixed timetable in
`--rounds` pairs of phases: with no page open, then with `--pages` simulated pages polling
(bench.pagesim, in a process of their own so they do not slow the load generator's event loop).
Each condition's latencies are pooled over its rounds; OrderService's CPU is measured per phase.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time

from bench.environment import Environment
from bench.loadgen import open_loop
from bench.pagesim import BOARD, simulate_pages
from bench.procstats import cpu_seconds
from bench.stats import summarize
from order_service.config import DEFAULTS


def post_latencies(url: str, rate: float, duration: float, label: str) -> tuple[list[float], int]:
    """Offer POST /order at `rate` for `duration` s: latencies of the 202s (s), and how many due."""
    run = open_loop(url, rate, duration, label)
    return [done - due for due, done, status in zip(run.due, run.done, run.status, strict=True)
            if status == 202], run.scheduled


def phase(env: Environment, rate: float, duration: float, pages: int, path: str) -> dict:
    """One load phase, with `pages` pages polling meanwhile (none: 0)."""
    url, pid = env.stack.order_url, env.stack["order"].process.pid
    child, queue = None, multiprocessing.Queue()
    if pages:
        child = multiprocessing.Process(target=simulate_pages,
                                        args=(url, pages, duration + 3, queue, path))
        child.start()
        time.sleep(1.5)  # every page loaded and polling before the timetable starts
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    latencies, scheduled = post_latencies(url, rate, duration, f"{pages} pages")
    cpu = cpu_seconds(pid) - cpu0
    wall = time.perf_counter() - wall0
    result = {"latencies": latencies, "scheduled": scheduled,
              "order_service_cores": round(cpu / wall, 3), "cpu_s": cpu, "wall_s": wall}
    if child is not None:
        result["polls"] = queue.get(timeout=duration + 60)
        child.join()
    return result


def measure(env: Environment, pages: int, rate: float, duration: float, rounds: int,
            path: str = BOARD) -> dict:
    """POST /order latency without and with `pages` polling pages, in `rounds` alternating pairs.

    Alternating, and pooling each condition's latencies over the rounds, keeps a drift of the
    machine's load (or of the table's size) from passing for the pages' cost.
    """
    post_latencies(env.stack.order_url, rate, min(duration, 3.0), "warm-up")
    runs: dict[str, list[dict]] = {"without_pages": [], "with_pages": []}
    for _ in range(rounds):
        runs["without_pages"].append(phase(env, rate, duration, 0, path))
        runs["with_pages"].append(phase(env, rate, duration, pages, path))
    results: dict = {"rate": rate, "duration_s": duration, "rounds": rounds, "pages": pages,
                     "poll": path}
    for condition, phases in runs.items():
        pooled = [latency for run in phases for latency in run["latencies"]]
        results[condition] = {
            "accepted": len(pooled), "scheduled": sum(run["scheduled"] for run in phases),
            **summarize(pooled),
            "per_round_p50_p99": [(summarize(run["latencies"])["p50"],
                                   summarize(run["latencies"])["p99"]) for run in phases],
            "median_round_p99": statistics.median(summarize(run["latencies"])["p99"]
                                                  for run in phases),
            "order_service_cores": round(sum(run["cpu_s"] for run in phases)
                                         / sum(run["wall_s"] for run in phases), 3),
        }
    polls = [run["polls"] for run in runs["with_pages"]]
    results["page_polls"] = polls
    extra_cpu = (sum(run["cpu_s"] for run in runs["with_pages"])
                 - sum(run["cpu_s"] for run in runs["without_pages"]))
    results["order_service_cpu_ms_per_poll"] = round(
        extra_cpu * 1000 / max(1, sum(p["polls"] for p in polls)), 3)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.split("\n")[0])
    p.add_argument("--pages", type=int, default=50, help="simulated open pages (default 50)")
    p.add_argument("--rate", type=float, default=100.0, help="POST /order per second (default 100)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per phase (default 8)")
    p.add_argument("--poll", default=BOARD,
                   help=f"what the pages poll (default {BOARD}; e.g. /health, for comparison)")
    p.add_argument("--rounds", type=int, default=5,
                   help="alternating pairs of phases, without then with pages (default 5)")
    args = p.parse_args(argv)
    env = Environment(DEFAULTS.workers, DEFAULTS.threads)
    try:
        env.start(baselines=False)
        results = measure(env, args.pages, args.rate, args.duration, args.rounds, args.poll)
    finally:
        env.close()
    print(json.dumps(results, indent=2))
    for condition in ("without_pages", "with_pages"):
        r = results[condition]
        print(f"{condition:14} POST /order p50 {r['p50']} ms  p99 {r['p99']} ms  "
              f"(median of the rounds' p99: {r['median_round_p99']} ms) "
              f"({r['accepted']}/{r['scheduled']} accepted; OrderService "
              f"{r['order_service_cores']} cores)")
    print(f"OrderService CPU per poll: {results['order_service_cpu_ms_per_poll']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
