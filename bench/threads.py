"""Where one order's CPU goes, thread by thread: `python -m bench.threads --rate 20 --duration 20`.

Starts the services as `python -m bench` does (bench.environment), warms them up, then offers
POST /order on the open loop's fixed timetable (bench.loadgen) for `--duration` seconds and waits
until those orders are final, as a `lowrate` window does. Before and after that window it reads,
for every thread of every service process (gunicorn: master and workers) and of RabbitMQ's
`beam.smp`, user and system CPU (/proc/<pid>/task/<tid>/stat) and voluntary and involuntary
context switches (/proc/<pid>/task/<tid>/status), and prints each per accepted order.

Python threads are named from `py-spy dump` when py-spy is on PATH (their kernel names are those of
the process), else by the kernel's; the Erlang VM's threads are added up by kind (`1_scheduler`
and `2_scheduler` are `scheduler`).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.environment import Environment
from bench.loadgen import open_loop
from bench.lowrate import connections_for, tick_ms
from bench.orders_api import OrderApi
from bench.procstats import GONE, PROC, TICKS, stat_fields, tree
from bench.summary import run_summary
from order_service.config import DEFAULTS

SERVICES = ("order", "inventory", "notification")
BROKER = "rabbitmq"
COUNTERS = ("utime", "stime", "voluntary", "nonvoluntary")
NOTHING: dict[str, Any] = {"utime": 0, "stime": 0, "threads": {}}
COMM_LENGTH = 15  # the kernel cuts a thread's name to this many characters
CONNECTIONS = 64  # the most keep-alive connections, as `python -m bench --connections`'s default
# `Thread 4242 (idle): "relay"`: py-spy names the OS thread id in decimal, or in hex the pthread id
# when it does not know the OS one (which /proc cannot be matched with).
PYSPY_THREAD = re.compile(r'^Thread (0x[0-9A-Fa-f]+|\d+) \(([^)]*)\)(?:: "(.*)")?\s*$')

Snapshot = dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Row:
    """CPU milliseconds (user, system) and context switches of one thread, or of several, per order."""

    name: str
    tid: int | None
    user_ms: float
    system_ms: float
    voluntary: float
    nonvoluntary: float

    @property
    def cpu_ms(self) -> float:
        return self.user_ms + self.system_ms


# --- reading /proc ---

def thread_counters(pid: int, tid: int) -> dict[str, Any]:
    """One thread's kernel name, CPU ticks (user, system) and context switches so far."""
    fields = stat_fields(pid, tid)
    task = PROC / str(pid) / "task" / str(tid)
    status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines()
                  if ":" in line)
    return {"comm": (task / "comm").read_text().rstrip("\n"),
            "utime": int(fields[11]), "stime": int(fields[12]),
            "voluntary": int(status["voluntary_ctxt_switches"]),
            "nonvoluntary": int(status["nonvoluntary_ctxt_switches"])}


def snapshot(processes: Mapping[str, int | None], children: bool = True) -> Snapshot:
    """{pid: {label, utime, stime, threads: {tid: counters}}} of each named process and, with
    `children`, of its descendants (gunicorn's workers). A process's utime and stime count its
    ended threads too."""
    found: Snapshot = {}
    for name, root in processes.items():
        for pid in (tree(root) if children else [root]) if root else ():
            try:
                fields = stat_fields(pid)
                threads = {}
                for task in (PROC / str(pid) / "task").iterdir():
                    try:
                        threads[int(task.name)] = thread_counters(pid, int(task.name))
                    except (*GONE, KeyError):  # the thread ended meanwhile
                        continue
            except GONE:  # the process ended meanwhile
                continue
            found[pid] = {"label": name if pid == root else f"{name} child", "utime": int(fields[11]),
                          "stime": int(fields[12]), "threads": threads}
    return found


# --- thread names ---

def pyspy_names(dump: str) -> dict[int, str]:
    """OS thread id -> Python thread name, from the text of `py-spy dump`."""
    names = {}
    for line in dump.splitlines():
        found = PYSPY_THREAD.match(line)
        if found and found[1].isdigit() and found[3] is not None:
            names[int(found[1])] = found[3]
    return names


def python_thread_names(pids: Iterable[int]) -> dict[int, str]:
    """Python thread names of `pids` by OS thread id, from one `py-spy dump` each; empty without
    py-spy, and without a process's names when its dump fails (py-spy needs ptrace)."""
    if shutil.which("py-spy") is None:
        print("py-spy is not on PATH: threads keep their kernel names", file=sys.stderr)
        return {}
    names: dict[int, str] = {}
    for pid in pids:
        try:
            dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"py-spy dump --pid {pid}: {exc}", file=sys.stderr)
            continue
        if dump.returncode != 0:
            print(f"py-spy dump --pid {pid} failed: {dump.stderr.strip()[-200:]}", file=sys.stderr)
        names.update(pyspy_names(dump.stdout))
    return names


def kind(name: str) -> str:
    """What an Erlang VM thread is, without its number: `1_scheduler` and `10_dirty_io_sch` are
    `scheduler` and `dirty_io_sch`."""
    return re.sub(r"\d+", "", name).strip("_") or name


# --- the arithmetic ---

def per_order(before: Snapshot, after: Snapshot, orders: int,
              names: Mapping[int, str] | None = None, ticks: int = TICKS) -> list[dict[str, Any]]:
    """What each process of `after` used between the two snapshots, per order: its threads, busiest
    first (a thread that started meanwhile counts from zero), and its total (`total`: CPU from the
    process's own counters, which keep what ended threads used; switches summed over its threads).
    `unattributed` is the part of the total that no living thread shows: threads that ended in the
    window, and rounding. A process that ended in the window is missing."""
    if orders <= 0:
        raise ValueError("no order was accepted: nothing to divide by")
    names = names or {}
    ms, per = 1000 / ticks / orders, 1 / orders
    processes = []
    for pid, now in after.items():
        then = before.get(pid, NOTHING)
        rows = []
        for tid, counters in now["threads"].items():
            old = then["threads"].get(tid, dict.fromkeys(COUNTERS, 0))
            used = {key: max(0, counters[key] - old[key]) for key in COUNTERS}
            rows.append(Row(names.get(tid, counters["comm"]), tid, used["utime"] * ms,
                            used["stime"] * ms, used["voluntary"] * per, used["nonvoluntary"] * per))
        rows.sort(key=lambda row: (-row.cpu_ms, -(row.voluntary + row.nonvoluntary), row.tid))
        total = Row("total", None, max(0, now["utime"] - then["utime"]) * ms,
                    max(0, now["stime"] - then["stime"]) * ms, sum(row.voluntary for row in rows),
                    sum(row.nonvoluntary for row in rows))
        processes.append({"pid": pid, "label": now["label"], "threads": rows, "total": total,
                          "unattributed_ms": max(0.0, total.cpu_ms - sum(row.cpu_ms for row in rows))})
    return processes


def by_kind(rows: Iterable[Row]) -> list[Row]:
    """Threads added up by kind(name), `name (n)` for n threads, busiest first. A name the kernel
    cut to 15 characters joins the longer kind it begins (`10_dirty_io_sch` joins `dirty_io_sche`)."""
    rows = list(rows)
    kinds = {kind(row.name) for row in rows}
    groups: dict[str, list[Row]] = {}
    for row in rows:
        own = kind(row.name)
        if len(row.name) == COMM_LENGTH:
            own = max((k for k in kinds if k.startswith(own)), key=len)
        groups.setdefault(own, []).append(row)
    summed = [Row(f"{name} ({len(group)})", None, sum(r.user_ms for r in group),
                  sum(r.system_ms for r in group), sum(r.voluntary for r in group),
                  sum(r.nonvoluntary for r in group)) for name, group in groups.items()]
    return sorted(summed, key=lambda row: (-row.cpu_ms, row.name))


# --- the report ---

def _line(name: str, tid: int | str, row: Row) -> str:
    return (f"{name:<34.34} {tid!s:>8} {row.cpu_ms:8.3f} {row.user_ms:8.3f} {row.system_ms:8.3f} "
            f"{row.voluntary:9.2f} {row.nonvoluntary:9.2f}")


def render(processes: list[dict[str, Any]], broker_pids: Iterable[int] = ()) -> list[str]:
    """One block per process: its total, then its threads (the broker's by kind)."""
    broker_pids = set(broker_pids)
    lines = [f"{'process / thread':<34} {'tid':>8} {'cpu':>8} {'user':>8} {'system':>8} "
             f"{'vol cs':>9} {'invol cs':>9}"]
    for process in processes:
        lines.append("")
        lines.append(_line(f"{process['label']} (pid {process['pid']})", "total", process["total"]))
        grouped = process["pid"] in broker_pids
        for row in by_kind(process["threads"]) if grouped else process["threads"]:
            lines.append(_line(f"  {row.name}", "" if grouped else row.tid, row))
        if process["unattributed_ms"] >= 0.0005:
            lines.append(f"  {'(ended threads, rounding)':<32} {'':>8} {process['unattributed_ms']:8.3f}")
    return lines


# --- the run ---

def measure(env: Environment, rate: float, duration: float, warm_up: float,
            settle_timeout: float = 180.0) -> dict[str, Any]:
    """A warm-up at `rate`, then the measured window: `rate` orders/s for `duration` s and the wait
    until they are final; the snapshots around it, and the Python threads' names after it."""
    url, api = env.stack.order_url, OrderApi(env.stack.order_url)
    connections = connections_for(rate, CONNECTIONS)
    if warm_up > 0:
        open_loop(url, rate, warm_up, f"warm-up@{rate:g}/s", connections)
        api.wait_settled(settle_timeout)
    pids = env.pids()
    services = {name: pids[name] for name in SERVICES}
    brokers = {name: pid for name, pid in pids.items() if name.startswith(BROKER)}

    def both() -> Snapshot:  # the Erlang VM without its port programs (inet_gethost, ...)
        return {**snapshot(services), **snapshot(brokers, children=False)}

    before, start = both(), time.perf_counter()
    outcome = open_loop(url, rate, duration, f"threads@{rate:g}/s", connections)
    api.wait_settled(settle_timeout)
    after, wall = both(), time.perf_counter() - start
    python = [pid for pid, process in after.items() if not process["label"].startswith(BROKER)]
    return {"rate": rate, "duration_s": duration, "window_s": wall, "load": run_summary(outcome),
            "before": before, "after": after, "names": python_thread_names(python),
            "broker_pids": [pid for pid in brokers.values() if pid in after]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=20.0, help="POST /order per second (default 20)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds of load in the measured window (default 20)")
    p.add_argument("--warm-up", type=float, default=2.0,
                   help="seconds of load at the same rate before it (default 2)")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warm_up < 0:
        p.error("--rate and --duration must be positive, --warm-up at least 0")
    env = Environment(DEFAULTS.workers, DEFAULTS.threads)
    try:
        env.start(baselines=False)
        run = measure(env, args.rate, args.duration, args.warm_up)
    finally:
        env.close()
    load = run["load"]
    if not load["accepted"]:
        print("no order was accepted", file=sys.stderr)
        return 1
    print(f"{load['accepted']} of {load['scheduled']} orders accepted at {run['rate']:g}/s "
          f"(POST /order p50 {load['latency_ms']['p50']} ms, p99 {load['latency_ms']['p99']} ms); "
          f"window {run['window_s']:.1f} s: the load, then the wait until its orders were final")
    print(f"Per accepted order: CPU in ms (user + system) and context switches (voluntary, "
          f"involuntary). /proc counts CPU in ticks: 1 tick = {tick_ms(load['accepted'])} ms here.")
    rows = per_order(run["before"], run["after"], load["accepted"], run["names"])
    print("\n".join(render(rows, run["broker_pids"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
