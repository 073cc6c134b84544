"""CPU per order at fixed low rates: the arithmetic from CPU snapshots to ms per order (no servers)."""
from __future__ import annotations

import pytest

from bench import cli
from bench.lowrate import connections_for, cpu_deltas, ms_per_order, saturated, tick_ms
from bench.table import lowrate


def test_deltas_of_two_snapshots_are_per_tree_and_never_negative():
    before = {"order": 10.0, "inventory": 4.0, "rabbitmq": 100.0, "bench": 2.0}
    after = {"order": 10.5, "inventory": 4.2, "rabbitmq": 100.3, "bench": 2.1, "notification": 0.1}
    deltas = cpu_deltas(before, after)
    assert deltas == pytest.approx({"order": 0.5, "inventory": 0.2, "rabbitmq": 0.3, "bench": 0.1,
                                    "notification": 0.1})
    # a tree whose worker was replaced meanwhile can read lower after than before
    assert cpu_deltas({"order": 3.0}, {"order": 2.0}) == {"order": 0.0}


def test_ms_per_order_divides_each_tree_and_totals_the_pipeline_only():
    deltas = {"order": 0.081, "inventory": 0.046, "notification": 0.022, "rabbitmq": 0.05,
              "bench": 0.03, "bare": 0.001}
    per = ms_per_order(deltas, orders=20)
    assert per["order"] == pytest.approx(4.05)
    assert per["rabbitmq"] == pytest.approx(2.5)
    assert per["bench"] == pytest.approx(1.5)
    assert per["total"] == pytest.approx(4.05 + 2.3 + 1.1 + 2.5)  # not the generator, not bare
    bare = ms_per_order({"bare": 0.03, "bench": 0.01}, orders=20, total_of=("bare",))
    assert bare["total"] == pytest.approx(1.5)


def test_ms_per_order_without_orders_is_unknown_not_zero():
    per = ms_per_order({"order": 0.1, "rabbitmq": 0.2}, orders=0)
    assert per == {"order": None, "rabbitmq": None, "total": None}


def test_saturated_figure_is_cores_over_orders_per_second():
    closed = {"achieved_rps": 1000.0,
              "cpu_cores": {"order": 0.78, "inventory": 0.27, "notification": 0.11,
                            "rabbitmq": 0.37, "bench": 0.1}}
    sat = saturated(closed)
    assert sat["rate"] == 1000.0
    assert sat["cpu_ms_per_order"]["order"] == pytest.approx(0.78)
    assert sat["cpu_ms_per_order"]["total"] == pytest.approx(1.53)
    assert saturated({"achieved_rps": 0.0, "cpu_cores": {"order": 0.1}})["cpu_ms_per_order"] == {
        "order": None, "total": None}


def test_low_rates_use_few_connections_so_none_idles_past_keep_alive():
    assert [connections_for(rate, 64) for rate in (1, 5, 20, 100, 1000)] == [1, 1, 2, 10, 64]


def test_options_and_the_table():
    quick = cli.parse(["--quick", "--only", "lowrate"])
    assert (quick.lowrate_rates, quick.lowrate_duration, quick.only) == ((5, 20, 100), 3.0, "lowrate")
    assert cli.parse(["--duration", "0.5"]).lowrate_duration == 0.5
    assert cli.parse(["--lowrate-rates", "50,10", "--lowrate-duration", "2"]).lowrate_rates == (10, 50)
    with pytest.raises(SystemExit):
        cli.parse(["--only", "sweep"])
    row = {"rate": 20, "accepted": 60, "window_s": 3.2, "tick_ms_per_order": tick_ms(60),
           "latency_ms": {"p50": 2.0, "p99": 5.0},
           "cpu_ms_per_order": {"order": 4.05, "inventory": 2.3, "notification": 1.1,
                                "rabbitmq": 2.5, "total": 9.95, "bench": 1.0}}
    low = {"idle": {"window_s": 3.0, "cpu_cores": {"order": 0.004, "rabbitmq": 0.02}},
           "order": [row], "bare": [{"rate": 20, "cpu_ms_per_order": {"bare": 1.5, "total": 1.5}}],
           "saturated": {"rate": 1000.0, "cpu_ms_per_order": {"order": 0.78, "total": 1.53}}}
    lines = lowrate(low)
    assert lines[-3].split() == ["20", "60", "3.2", "4.05", "2.30", "1.10", "2.50", "9.95", "1.00",
                                 "1.50", "2.0", "5.0", "0.17"]
    assert lines[-2].split()[:6] == ["1000.0", "(closed", "loop)", "-", "-", "0.78"]
    assert lines[-1] == "Idle, no load, over 3.0 s (cores): order 0.004, rabbitmq 0.020"
    assert lowrate(None) == []
