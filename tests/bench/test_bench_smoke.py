"""The benchmark's pure parts: percentiles, the open-loop timetable, and result arithmetic.

No service, broker or network is involved; `python -m bench` itself is not part of the suite.
"""
from __future__ import annotations

import pytest

from bench.headline import headline
from bench.httpclient import order_id_of, order_requests
from bench.schedule import Timetable, parse_rates
from bench.stats import is_saturated, percentile, ratio, summarize
from bench.summary import e2e_summary
from bench.table import render


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_of_small_and_empty_samples():
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 51) == 2.0
    assert percentile([], 99) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_converts_seconds_to_milliseconds_whatever_the_order():
    summary = summarize([0.003, 0.001, 0.002, 0.010])
    assert summary == {"count": 4, "p50": 2.0, "p95": 10.0, "p99": 10.0, "max": 10.0, "mean": 4.0}
    assert summarize([])["p99"] is None


def test_timetable_spaces_requests_evenly_from_zero():
    table = Timetable(rate=200, duration=2.5)
    assert table.count == 500
    assert table.at(0) == 0.0
    assert table.at(1) == pytest.approx(0.005)
    assert table.at(499) == pytest.approx(2.495)
    gaps = {round(table.at(i + 1) - table.at(i), 9) for i in range(table.count - 1)}
    assert gaps == {0.005}
    with pytest.raises(IndexError):
        table.at(500)


def test_timetable_due_counts_do_not_depend_on_what_was_answered():
    table = Timetable(rate=100, duration=1)
    assert table.due_by(-0.1) == 0
    assert table.due_by(0.0) == 1
    assert table.due_by(0.0099) == 1
    assert table.due_by(0.01) == 2
    assert table.due_by(0.5) == 51
    assert table.due_by(60) == 100


def test_timetable_rejects_nonsense_and_rates_parse():
    with pytest.raises(ValueError):
        Timetable(rate=0, duration=1)
    assert parse_rates("800, 100,200,100") == [100, 200, 800]
    for bad in ("", "100,x", "0,100"):
        with pytest.raises(ValueError):
            parse_rates(bad)


def test_saturation_and_ratios():
    assert not is_saturated(offered=800, achieved=799, p99_ms=20.0, failed=0, scheduled=8000)
    assert is_saturated(offered=800, achieved=600, p99_ms=20.0, failed=0, scheduled=8000)
    assert is_saturated(offered=800, achieved=800, p99_ms=900.0, failed=0, scheduled=8000)
    assert is_saturated(offered=800, achieved=800, p99_ms=20.0, failed=200, scheduled=8000)
    assert ratio(400, 800) == 0.5
    assert ratio(None, 800) is None and ratio(1, 0) is None


def test_requests_and_order_id_parsing():
    request = order_requests("http://127.0.0.1:8101", variants=2)[0]
    head, body = request.split(b"\r\n\r\n")
    assert head.startswith(b"POST /order HTTP/1.1\r\nHost: 127.0.0.1:8101")
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b'{"user_id": "user0", "item": "Burger", "quantity": 1}'
    assert order_id_of(b'{"message":"m","order_id":"abc-1","status":"accepted"}') == "abc-1"
    assert order_id_of(b'{"error":"x"}') is None


def test_e2e_summary_uses_the_services_own_stamps():
    orders = [
        {"status": "reserved", "created_at": "2026-01-01T00:00:00.000000Z",
         "updated_at": "2026-01-01T00:00:00.010000Z"},
        {"status": "failed", "created_at": "2026-01-01T00:00:00.500000Z",
         "updated_at": "2026-01-01T00:00:01.000000Z"},
        {"status": "accepted", "created_at": "2026-01-01T00:00:00.900000Z",
         "updated_at": "2026-01-01T00:00:00.900000Z"},
    ]
    summary = e2e_summary(orders)
    assert (summary["orders"], summary["final"], summary["reserved"]) == (3, 2, 1)
    assert summary["latency_ms"]["p50"] == pytest.approx(10.0)
    assert summary["latency_ms"]["max"] == pytest.approx(500.0)
    assert summary["span_s"] == pytest.approx(1.0)
    assert summary["orders_per_s"] == pytest.approx(2.0)


def _step(rate: float, p99: float, saturated: bool = False) -> dict:
    return {"offered_rps": rate, "saturated": saturated, "latency_ms": {"p99": p99}}


def test_p99_headline_is_the_highest_rate_neither_saturates_and_says_how_far_the_target_held():
    sweep = {"bare": [_step(100, 2.0), _step(200, 2.0), _step(400, 2.0), _step(800, 2.0),
                      _step(1600, 9.0, saturated=True)],
             "order": [_step(100, 3.0), _step(200, 4.0), _step(400, 9.0), _step(800, 3.0),
                       _step(1600, 600.0, saturated=True)]}
    figure = headline({"sweep": sweep})["p99_vs_bare_p99"]
    assert (figure["at_rate"], figure["value"], figure["met"]) == (800, 1.5, True)
    assert figure["worst_unsaturated_ratio"] == 4.5
    assert figure["within_target_up_to_rate"] == 200  # 400/s broke it, whatever came after


def test_p99_within_target_is_none_when_the_lowest_rate_already_misses():
    sweep = {"bare": [_step(100, 2.0)], "order": [_step(100, 5.0)]}
    figure = headline({"sweep": sweep})["p99_vs_bare_p99"]
    assert figure["met"] is False and figure["within_target_up_to_rate"] is None


def test_the_tables_show_each_services_wal_beside_its_rss():
    mb = 1024 * 1024
    point = {"rss": {"order": 80 * mb}, "disk": {"order": {"db": 5 * mb, "wal": 8 * mb}}}
    soak = {"soak": {"rate": 700, "series": [{"orders": 0, **point},
                                             {"orders": 10, **point, "post": {"achieved_rps": 7}}]}}
    lines = render(soak).splitlines()
    assert "order WAL" in lines[2]
    assert lines[-1].split()[-2:] == ["80.0", "8.0"]  # RSS and WAL of the last sample, in MB
    full = {"rss": {"start": {"order": 70 * mb}, "end": {"order": 80 * mb}},
            "disk": {"end": {"order": {"db": 5 * mb, "wal": 8 * mb}}}}
    assert render(full).splitlines()[-1].split() == ["order", "70.0", "80.0", "10.0", "5.0", "8.0"]
