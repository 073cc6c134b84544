"""Simulated order pages: each does what order_service/static/page.js does, over raw HTTP/1.1.

It loads the page and its files once, then asks GET /orders/board?limit=20 with the last ETag in
If-None-Match, and asks again 500 ms ± 25% after each answer, on a keep-alive connection of its own.
The pages start at moments spread over the first 500 ms, as pages opened by different people
would. `bench.pages` runs them in a process of their own.
"""
from __future__ import annotations

import asyncio
import random
import time

from bench.httpclient import host_port
from bench.stats import summarize

POLL_SECONDS, JITTER, ROWS = 0.5, 0.25, 20  # as page.js: POLL_MS, JITTER and ROWS
BOARD = f"/orders/board?limit={ROWS}"
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


async def _page(url: str, path: str, stop_at: float, polls: list[tuple[int, float]],
                offset: float, rng: random.Random) -> None:
    await asyncio.sleep(offset)  # people open their pages at different moments
    host, port = host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for file in FILES:
            await _ask(reader, writer, f"{host}:{port}", file, None)
        etag = None
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            status, new_tag = await _ask(reader, writer, f"{host}:{port}", path, etag)
            polls.append((status, time.perf_counter() - started))
            etag = new_tag if status == 200 else etag
            await asyncio.sleep(POLL_SECONDS * (1 - JITTER + 2 * JITTER * rng.random()))
    finally:
        writer.close()


def simulate_pages(url: str, pages: int, seconds: float, results, path: str = BOARD) -> None:
    """Run `pages` pages polling `path` for `seconds` (in a child process); put a summary on
    `results`."""
    polls: list[tuple[int, float]] = []

    async def run() -> None:
        stop_at = time.monotonic() + seconds
        rng = random.Random(pages)  # the same offsets and waits in every run
        offsets = rng.sample(range(1000), pages)
        await asyncio.gather(*(_page(url, path, stop_at, polls, POLL_SECONDS * offset / 1000, rng)
                               for offset in offsets))

    cpu0 = time.process_time()
    asyncio.run(run())
    cpu = time.process_time() - cpu0
    statuses = [status for status, _ in polls]
    results.put({"polls": len(polls), "per_s": round(len(polls) / seconds, 1),
                 "simulator_cores": round(cpu / seconds, 3),
                 "answers": {str(s): statuses.count(s) for s in sorted(set(statuses))},
                 "poll_ms": summarize(seconds for _, seconds in polls)})
