"""What open order pages cost POST /order: `python -m bench.pages [--pages 50] [--rate 100]`.

Starts the services (as `python -m bench` does), then offers POST /order on a fixed timetable
three times: with no page open, with `--pages` simulated pages polling, and with none again (so a
drift over the run shows). A simulated page does what order_service/static/page.js does: it loads
the page and its files once, then asks GET /orders/board?limit=20 with the last ETag in
If-None-Match, and asks again 500 ms after each answer, on a keep-alive connection of its own.
The pages run in a process of their own, so they do not slow the load generator's event loop.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time

from bench.environment import Environment
from bench.httpclient import host_port
from bench.loadgen import open_loop
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


async def _page(url: str, stop_at: float, polls: list[tuple[int, float]]) -> None:
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
        await asyncio.gather(*(_page(url, stop_at, polls) for _ in range(pages)))

    asyncio.run(run())
    statuses = [status for status, _ in polls]
    results.put({"polls": len(polls), "per_s": round(len(polls) / seconds, 1),
                 "answers": {str(s): statuses.count(s) for s in sorted(set(statuses))},
                 "poll_ms": summarize(seconds for _, seconds in polls)})


def post_latency(url: str, rate: float, duration: float, label: str) -> dict:
    """Offer POST /order at `rate` for `duration` s; the latency summary of the 202s (ms)."""
    run = open_loop(url, rate, duration, label)
    latencies = [done - due for due, done, status in zip(run.due, run.done, run.status,
                                                         strict=True) if status == 202]
    return {"accepted": len(latencies), "scheduled": run.scheduled, **summarize(latencies)}


def measure(env: Environment, pages: int, rate: float, duration: float) -> dict:
    """POST /order latency with no pages, with `pages` pages polling, and with none again."""
    url = env.stack.order_url
    results: dict = {"rate": rate, "duration_s": duration, "pages": pages}
    post_latency(url, rate, min(duration, 3.0), "warm-up")
    results["without_pages"] = post_latency(url, rate, duration, "no pages")
    queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=simulate_pages, args=(url, pages, duration + 4, queue))
    child.start()
    time.sleep(2.0)  # let every page load and start polling before the timetable begins
    results["with_pages"] = post_latency(url, rate, duration, f"{pages} pages")
    results["page_polls"] = queue.get(timeout=duration + 60)
    child.join()
    results["without_pages_again"] = post_latency(url, rate, duration, "no pages again")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.split("\n")[0])
    p.add_argument("--pages", type=int, default=50, help="simulated open pages (default 50)")
    p.add_argument("--rate", type=float, default=100.0, help="POST /order per second (default 100)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default 20)")
    args = p.parse_args(argv)
    env = Environment(DEFAULTS.workers, DEFAULTS.threads)
    try:
        env.start(baselines=False)
        results = measure(env, args.pages, args.rate, args.duration)
    finally:
        env.close()
    print(json.dumps(results, indent=2))
    for phase in ("without_pages", "with_pages", "without_pages_again"):
        r = results[phase]
        print(f"{phase:20} POST /order p50 {r['p50']} ms  p99 {r['p99']} ms  "
              f"({r['accepted']}/{r['scheduled']} accepted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
