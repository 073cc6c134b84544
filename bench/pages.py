"""What open order pages cost POST /order: `python -m bench.pages [--pages 50] [--rate 100]`.

Starts the services (as `python -m bench` does), then offers POST /order on a fixed timetable in
`--rounds` pairs of phases: with no page open, then with `--pages` simulated pages polling. Each
condition's latencies are pooled over its rounds; OrderService's CPU is measured per phase.

A simulated page does what order_service/static/page.js does: it loads the page and its files
once, then asks GET /orders/board?limit=20 with the last ETag in If-None-Match, and asks again
500 ms after each answer, on a keep-alive connection of its own. The pages start at moments spread
over the first 500 ms, as pages opened by different people would. The pages run in a process of
their own, so they do not slow the load generator's event loop.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import time

from bench.environment import Environment
from bench.httpclient import host_port
from bench.loadgen import open_loop
from bench.procstats import cpu_seconds
from bench.stats import summarize
from order_service.config import DEFAULTS

POLL_SECONDS, ROWS = 0.5, 20  # as page.js: POLL_MS and ROWS
FILES = ("/", "/static/page.css", "/static/page.js", "/static/favicon.svg")


async def _ask(reader, writer, host: str, path: str, etag: str | None) -> tuple[int, str | None]:
    """One GET on a keep-alive connection: (status, ETag of the answer)."""
    extra = f"If-None-Match: {etag}\r\n" if etag else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n{extra}\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
    lowered = {name.lower(): value for name, value in headers.items()}
    length = int(lowered.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return int(head[9:12]), lowered.get("etag")


async def _page(url: str, stop_at: float, polls: list[tuple[int, float]], offset: float) -> None:
    await asyncio.sleep(offset)  # people open their pages at different moments
    host, port = host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for path in FILES:
            await _ask(reader, writer, f"{host}:{port}", path, None)
        etag = None
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            status, new_tag = await _ask(reader, writer, f"{host}:{port}",
                                         f"/orders/board?limit={ROWS}", etag)
            polls.append((status, time.perf_counter() - started))
            etag = new_tag if status == 200 else etag
            await asyncio.sleep(POLL_SECONDS)
    finally:
        writer.close()


def simulate_pages(url: str, pages: int, seconds: float, results) -> None:
    """Run `pages` polling pages for `seconds` (in a child process); put a summary on `results`."""
    polls: list[tuple[int, float]] = []

    async def run() -> None:
        stop_at = time.monotonic() + seconds
        offsets = random.Random(pages).sample(range(1000), pages)  # the same in every run
        await asyncio.gather(*(_page(url, stop_at, polls, POLL_SECONDS * offset / 1000)
                               for offset in offsets))

    cpu0 = time.process_time()
    asyncio.run(run())
    cpu = time.process_time() - cpu0
    statuses = [status for status, _ in polls]
    results.put({"polls": len(polls), "per_s": round(len(polls) / seconds, 1),
                 "simulator_cores": round(cpu / seconds, 3),
                 "answers": {str(s): statuses.count(s) for s in sorted(set(statuses))},
                 "poll_ms": summarize(seconds for _, seconds in polls)})


def post_latencies(url: str, rate: float, duration: float, label: str) -> tuple[list[float], int]:
    """Offer POST /order at `rate` for `duration` s: latencies of the 202s (s), and how many due."""
    run = open_loop(url, rate, duration, label)
    return [done - due for due, done, status in zip(run.due, run.done, run.status, strict=True)
            if status == 202], run.scheduled


def phase(env: Environment, rate: float, duration: float, pages: int) -> dict:
    """One load phase, with `pages` pages polling meanwhile (none: 0)."""
    url, pid = env.stack.order_url, env.stack["order"].process.pid
    child, queue = None, multiprocessing.Queue()
    if pages:
        child = multiprocessing.Process(target=simulate_pages,
                                        args=(url, pages, duration + 3, queue))
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


def measure(env: Environment, pages: int, rate: float, duration: float, rounds: int) -> dict:
    """POST /order latency without and with `pages` polling pages, in `rounds` alternating pairs.

    Alternating, and pooling each condition's latencies over the rounds, keeps a drift of the
    machine's load (or of the table's size) from passing for the pages' cost.
    """
    post_latencies(env.stack.order_url, rate, min(duration, 3.0), "warm-up")
    runs: dict[str, list[dict]] = {"without_pages": [], "with_pages": []}
    for _ in range(rounds):
        runs["without_pages"].append(phase(env, rate, duration, 0))
        runs["with_pages"].append(phase(env, rate, duration, pages))
    results: dict = {"rate": rate, "duration_s": duration, "rounds": rounds, "pages": pages}
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
    p.add_argument("--rounds", type=int, default=5,
                   help="alternating pairs of phases, without then with pages (default 5)")
    args = p.parse_args(argv)
    env = Environment(DEFAULTS.workers, DEFAULTS.threads)
    try:
        env.start(baselines=False)
        results = measure(env, args.pages, args.rate, args.duration, args.rounds)
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
