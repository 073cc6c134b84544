"""Drive POST /order over keep-alive connections: open loop on a fixed timetable, or closed loop.

Open loop: request i is due at t0 + i/rate. A pool of connections takes the due requests in order;
when every connection is busy the next request waits, and its latency still counts from the time it
was due, so a slow server cannot hide latency by slowing the generator down (no coordinated
omission). Closed loop: N clients each send the next request as soon as the last one is answered.
"""
from __future__ import annotations

import asyncio
import itertools
import sys
import time
from dataclasses import dataclass, field

from bench.httpclient import Connection, host_port, order_id_of, order_requests
from bench.schedule import Timetable
from bench.stats import percentile

FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


@dataclass
class Outcome:
    """Every request of one run: due, sent and answered times (seconds from t0), and statuses."""

    label: str
    mode: str
    offered: float | None = None
    concurrency: int = 0
    duration: float = 0.0
    scheduled: int = 0
    wall_start: float = 0.0
    due: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    loop_lag: list[float] = field(default_factory=list)  # how late a sleeping worker woke up
    unsent: int = 0
    timed_out: int = 0
    inflight: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def record(self, due: float, sent: float, done: float, status: int, body: bytes) -> None:
        self.due.append(due)
        self.sent.append(sent)
        self.done.append(done)
        self.status.append(status)
        if status == 202:
            order_id = order_id_of(body)
            if order_id:
                self.order_ids.append(order_id)


async def _progress(run: Outcome, t0: float) -> None:
    """Print one line per second to stderr while the run goes on."""
    seen, tick = 0, t0
    while True:
        tick += 1.0
        await asyncio.sleep(max(0.0, tick - time.perf_counter()))
        n = len(run.done)
        window = sorted(run.done[i] - run.due[i] for i in range(seen, n))
        lag = sorted(run.sent[i] - run.due[i] for i in range(seen, n))
        failed = sum(1 for s in run.status[seen:n] if s not in (200, 202))
        p99, lag99 = percentile(window, 99), percentile(lag, 99)
        total = run.scheduled or "-"
        print(f"  [{run.label}] {tick - t0:5.0f}s  answered {n}/{total}  {n - seen}/s  "
              f"failed {failed}  in flight {run.inflight}  "
              f"p99 {p99 * 1000 if p99 is not None else float('nan'):.1f} ms  "
              f"send lag p99 {lag99 * 1000 if lag99 is not None else float('nan'):.1f} ms",
              file=sys.stderr, flush=True)
        seen = n


async def _send(run: Outcome, conn: Connection, request: bytes, due: float, t0: float) -> None:
    sent = time.perf_counter()
    run.inflight += 1
    try:
        status, body = await conn.send(request)
    except FAILURES:
        status, body = 0, b""
    finally:
        run.inflight -= 1
    run.record(due, sent - t0, time.perf_counter() - t0, status, body)


async def _drive(run: Outcome, url: str, connections: int, worker, deadline_after: float) -> None:
    host, port = host_port(url)
    conns = await asyncio.gather(*(Connection(host, port).open() for _ in range(connections)))
    cpu0, t0 = time.process_time(), time.perf_counter() + 0.05
    run.wall_start = time.time() + 0.05
    progress = asyncio.create_task(_progress(run, t0))
    tasks = [asyncio.create_task(worker(conn, t0)) for conn in conns]
    _, pending = await asyncio.wait(tasks, timeout=deadline_after + 0.05)
    run.timed_out = run.inflight
    for task in (*pending, progress):
        task.cancel()
    await asyncio.gather(*pending, progress, return_exceptions=True)
    run.wall_seconds = time.perf_counter() - t0
    run.cpu_seconds = time.process_time() - cpu0
    for conn in conns:
        conn.close()


async def _open_loop(run: Outcome, url: str, table: Timetable, connections: int,
                     grace: float) -> None:
    requests, indexes = order_requests(url), itertools.count()

    async def worker(conn: Connection, t0: float) -> None:
        for i in indexes:  # shared by all workers: each takes the next due request
            if i >= table.count:
                return
            due = t0 + table.at(i)
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                run.loop_lag.append(time.perf_counter() - due)
            elif now > t0 + table.duration + grace:
                run.unsent += 1
                continue
            await _send(run, conn, requests[i % len(requests)], due - t0, t0)

    await _drive(run, url, connections, worker, table.duration + grace + 1.0)


async def _closed_loop(run: Outcome, url: str, concurrency: int, duration: float | None,
                       count: int | None, timeout: float) -> None:
    requests, indexes = order_requests(url), itertools.count()
    limit = count if count is not None else float("inf")

    async def worker(conn: Connection, t0: float) -> None:
        stop_at = t0 + duration if duration is not None else float("inf")
        for i in indexes:
            if i >= limit or time.perf_counter() >= stop_at:
                return
            now = time.perf_counter()
            await _send(run, conn, requests[i % len(requests)], now - t0, t0)

    await _drive(run, url, concurrency, worker, (duration or 0.0) + timeout)


def open_loop(url: str, rate: float, duration: float, label: str, connections: int = 64,
              grace: float | None = None) -> Outcome:
    """Offer `rate` POST /order per second for `duration` seconds on a fixed timetable."""
    table = Timetable(rate, duration)
    run = Outcome(label, "open", offered=rate, concurrency=connections, duration=duration,
                  scheduled=table.count)
    asyncio.run(_open_loop(run, url, table, connections, max(5.0, duration) if grace is None
                           else grace))
    return run


def closed_loop(url: str, concurrency: int, label: str, duration: float | None = None,
                count: int | None = None, timeout: float = 120.0) -> Outcome:
    """`concurrency` clients posting back to back, for `duration` seconds or `count` requests."""
    run = Outcome(label, "closed", concurrency=concurrency, duration=duration or 0.0,
                  scheduled=count or 0)
    asyncio.run(_closed_loop(run, url, concurrency, duration, count, timeout))
    return run
