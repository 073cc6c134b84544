"""`python -m bench.threads`'s pure parts: /proc snapshots to rows per order, py-spy's thread names,
the Erlang VM's threads by kind (no servers; the tool itself is run by hand)."""
from __future__ import annotations

import os
import threading

import pytest

from bench.threads import Row, by_kind, kind, per_order, pyspy_names, render, snapshot


def thread(comm: str, utime: int, stime: int, voluntary: int, nonvoluntary: int) -> dict:
    return {"comm": comm, "utime": utime, "stime": stime, "voluntary": voluntary,
            "nonvoluntary": nonvoluntary}


BEFORE = {
    100: {"label": "order", "utime": 50, "stime": 20,
          "threads": {100: thread("python", 40, 15, 1000, 10),
                      101: thread("python", 10, 5, 500, 5),
                      102: thread("python", 0, 0, 7, 0)}},  # ends in the window
    200: {"label": "rabbitmq", "utime": 900, "stime": 300,
          "threads": {201: thread("1_scheduler", 400, 100, 5000, 50),
                      202: thread("2_scheduler", 300, 100, 4000, 40)}},
}
AFTER = {
    100: {"label": "order", "utime": 62, "stime": 26,  # 12 user, 6 system ticks in the window
          "threads": {100: thread("python", 44, 17, 1100, 12),
                      101: thread("python", 16, 8, 1300, 5),
                      103: thread("python", 1, 0, 40, 0)}},  # started in the window
    150: {"label": "order child", "utime": 3, "stime": 1,  # a worker started in the window
          "threads": {150: thread("python", 3, 1, 20, 2)}},
    200: {"label": "rabbitmq", "utime": 910, "stime": 302,
          "threads": {201: thread("1_scheduler", 406, 101, 5200, 50),
                      202: thread("2_scheduler", 304, 101, 4100, 41)}},
}


def test_rows_are_each_threads_cpu_and_switches_per_order_busiest_first():
    processes = per_order(BEFORE, AFTER, orders=20, names={100: "MainThread", 101: "relay"},
                          ticks=100)  # 1 tick = 10 ms, 0.5 ms per order
    order, child, broker = processes
    assert (order["pid"], order["label"], child["label"], broker["label"]) == (
        100, "order", "order child", "rabbitmq")
    assert [(row.name, row.tid) for row in order["threads"]] == [
        ("relay", 101), ("MainThread", 100), ("python", 103)]
    relay = order["threads"][0]
    assert (relay.user_ms, relay.system_ms, relay.cpu_ms) == pytest.approx((3.0, 1.5, 4.5))
    assert (relay.voluntary, relay.nonvoluntary) == pytest.approx((40.0, 0.0))
    main = order["threads"][1]
    assert (main.user_ms, main.system_ms, main.voluntary, main.nonvoluntary) == pytest.approx(
        (2.0, 1.0, 5.0, 0.1))
    assert order["threads"][2].cpu_ms == pytest.approx(0.5)  # from zero: it started meanwhile
    total = order["total"]
    assert (total.user_ms, total.system_ms) == pytest.approx((6.0, 3.0))  # the process's counters
    assert (total.voluntary, total.nonvoluntary) == pytest.approx((47.0, 0.1))  # its threads'
    # 8 ms of the process's 9 are in living threads; tid 102 ended in the window with the rest
    assert order["unattributed_ms"] == pytest.approx(1.0)
    assert child["total"].cpu_ms == pytest.approx(2.0)
    assert broker["total"].cpu_ms == pytest.approx(6.0)


def test_what_no_living_thread_shows_is_unattributed_and_nothing_is_negative():
    after = {100: {**AFTER[100], "utime": 70}}  # 8 more user ticks than the living threads show
    after[100]["threads"] = {**AFTER[100]["threads"],
                             101: thread("python", 5, 8, 1300, 5)}  # tid 101 reused: lower than before
    (order,) = per_order(BEFORE, after, orders=20, ticks=100)
    reused = next(row for row in order["threads"] if row.tid == 101)
    assert reused.user_ms == 0.0 and reused.system_ms == pytest.approx(1.5)
    shown = sum(row.cpu_ms for row in order["threads"])
    assert order["unattributed_ms"] == pytest.approx(order["total"].cpu_ms - shown)
    assert order["unattributed_ms"] > 0


def test_without_orders_there_is_nothing_to_divide_by():
    with pytest.raises(ValueError):
        per_order(BEFORE, AFTER, orders=0)


PYSPY_DUMP = '''Process 8414: /usr/bin/python3 -m inventory_service
Python v3.11.7 (/usr/bin/python3.11)

Thread 8414 (idle): "MainThread"
    wait (threading.py:320)
    run (messaging/service.py:140)
Thread 8456 (active+gil): "inventory-consume"
    _handle (inventory_service/handlers.py:88)
    Thread.run (threading.py:982)
Thread 8457 (idle): "health-http"
    serve_forever (socketserver.py:233)
Thread 0x7F5A6B2C3740 (idle): "from an older py-spy"
    <module> (thr.py:6)
Thread 8460 (idle)
    <module> (thr.py:6)
'''


def test_pyspy_dump_names_the_os_threads_it_numbers_in_decimal():
    assert pyspy_names(PYSPY_DUMP) == {8414: "MainThread", 8456: "inventory-consume",
                                       8457: "health-http"}  # a hex id is a pthread id, not a tid
    assert pyspy_names("") == {}


def test_erlang_threads_add_up_by_kind_also_when_the_kernel_cut_their_names():
    assert [kind(name) for name in ("1_scheduler", "10_dirty_io_sch", "async_1", "0_poller",
                                    "beam.smp", "sys_sig_dispatc")] == [
        "scheduler", "dirty_io_sch", "async", "poller", "beam.smp", "sys_sig_dispatc"]
    rows = [Row("1_scheduler", 1, 1.0, 0.5, 10, 1), Row("2_scheduler", 2, 2.0, 0.5, 20, 2),
            Row("1_dirty_io_sche", 3, 0.1, 0.0, 1, 0), Row("10_dirty_io_sch", 4, 0.2, 0.1, 2, 0),
            Row("1_aux", 5, 0.0, 0.0, 0, 0)]
    grouped = by_kind(rows)
    assert [row.name for row in grouped] == ["scheduler (2)", "dirty_io_sche (2)", "aux (1)"]
    assert (grouped[0].user_ms, grouped[0].system_ms, grouped[0].voluntary) == pytest.approx(
        (3.0, 1.0, 30))
    assert grouped[1].cpu_ms == pytest.approx(0.4)


def test_render_shows_totals_then_threads_and_the_broker_by_kind():
    lines = render(per_order(BEFORE, AFTER, orders=20, names={101: "relay"}, ticks=100),
                   broker_pids=[200])
    text = "\n".join(lines)
    assert lines[0].split() == ["process", "/", "thread", "tid", "cpu", "user", "system", "vol",
                                "cs", "invol", "cs"]
    assert lines[2].split()[:7] == ["order", "(pid", "100)", "total", "9.000", "6.000", "3.000"]
    assert lines[3].split()[:5] == ["relay", "101", "4.500", "3.000", "1.500"]
    assert "scheduler (2)" in text and "1_scheduler" not in text


def test_a_snapshot_of_this_process_reads_every_living_thread():
    started, stop = threading.Event(), threading.Event()

    def spin() -> None:
        started.set()
        stop.wait(10)

    helper = threading.Thread(target=spin, daemon=True)
    helper.start()
    started.wait(5)
    try:
        taken = snapshot({"me": os.getpid()})
    finally:
        stop.set()
        helper.join(5)
    me = taken[os.getpid()]
    assert me["label"] == "me"
    assert {os.getpid(), helper.native_id} <= set(me["threads"])
    counters = me["threads"][os.getpid()]
    assert counters["utime"] + counters["stime"] >= 0 and counters["voluntary"] >= 0
    assert set(snapshot({"me": os.getpid()}, children=False)) == {os.getpid()}
    assert snapshot({"gone": None}) == {}
