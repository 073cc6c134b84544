"""`python -m bench --configs`: several backends measured in one run and compared side by side.

The end-to-end test runs the real benchmark on tiny counts against SQLite and PostgreSQL (the
three-node cluster configuration takes minutes to boot, so it is left to a manual run); it needs
RabbitMQ with its management API and PostgreSQL, as the integration tests do, and is skipped
without them.
"""
from __future__ import annotations

import json

import pytest
import requests

from bench import cli
from bench.environment import Environment
from bench.sidebyside import compare
from bench.table import side_by_side

TINY = ["--duration", "0.5", "--rates", "40", "--drain-orders", "40", "--raw-messages", "200",
        "--concurrency", "4", "--connections", "4", "--settle-timeout", "60"]


def test_configs_default_to_sqlite_alone_and_are_checked():
    assert cli.parse([]).configs == ("sqlite",)
    assert cli.parse(["--configs", "sqlite, postgres,sqlite,postgres-cluster"]).configs == (
        "sqlite", "postgres", "postgres-cluster")
    for bad in ("", "mysql", "sqlite,nope"):
        with pytest.raises(SystemExit):
            cli.parse(["--configs", bad])
    with pytest.raises(SystemExit):
        cli.parse(["--soak", "10", "--configs", "sqlite,postgres"])


def test_sqlite_nometrics_is_sqlite_with_metrics_off_and_is_held_to_the_5_percent_budget():
    assert cli.parse(["--configs", "sqlite,sqlite-nometrics"]).configs == ("sqlite", "sqlite-nometrics")
    off, on = Environment(1, 1, "sqlite-nometrics"), Environment(1, 1, "sqlite")
    try:
        assert (off.backend, off.clustered, off.env["METRICS"]) == ("sqlite", False, "off")
        assert "METRICS" not in on.env
    finally:
        off.close()
        on.close()
    compared = compare({"sqlite": _run(1000.0, 2000.0, 1000.0),
                        "sqlite-nometrics": _run(1000.0, 2000.0, 1060.0)})
    target = compared["targets"]["sqlite-nometrics/sqlite e2e_orders_per_s"]
    assert (target["value"], target["met"]) == (1.06, False)


def _run(post: float, bare: float, e2e: float, lost: int = 0) -> dict:
    return {"closed_loop": {"order": {"achieved_rps": post, "latency_ms": {"p50": 2.0, "p99": 9.0}},
                            "bare": {"achieved_rps": bare}},
            "e2e": {"order closed": {"orders_per_s": e2e, "latency_ms": {"p50": 4.0, "p99": 20.0}}},
            "drain": {"drain_per_s": 3000.0}, "amqp_baseline": {"consume": {"per_s": 10000.0}},
            "verify": {"accepted": 100, "lost": lost, "not_final": 0}}


def test_side_by_side_divides_each_figure_by_sqlites_of_the_same_run():
    compared = compare({"sqlite": _run(1000.0, 2000.0, 1000.0),
                        "postgres": _run(600.0, 1500.0, 650.0),
                        "postgres-cluster": {"error": "cluster did not start"}})
    pg = compared["ratios"]["postgres/sqlite"]
    assert (pg["post_rps"], pg["e2e_orders_per_s"], pg["post_vs_bare"]) == (0.6, 0.65, 0.8)
    assert compared["figures"]["postgres"]["post_vs_bare"] == 0.4
    assert compared["ratios"]["postgres-cluster/sqlite"]["post_rps"] is None
    target = compared["targets"]["postgres/sqlite e2e_orders_per_s"]
    assert (target["value"], target["met"]) == (0.65, False)
    lines = side_by_side(compared)
    assert lines[1].split()[-3:] == ["postgres-cluster", "/", "sqlite"]
    assert "target postgres/sqlite e2e_orders_per_s >= 0.7: 0.650 (NOT met)" in lines


def _services_available() -> str | None:
    try:
        requests.get("http://127.0.0.1:15672/api/overview", auth=("guest", "guest"),
                     timeout=3).raise_for_status()
    except requests.RequestException as exc:
        return f"RabbitMQ management API unreachable: {exc}"
    try:
        import psycopg

        from stack.postgres import admin_url
        psycopg.connect(admin_url(), connect_timeout=3).close()
    except Exception as exc:  # any failure means: no PostgreSQL here
        return f"PostgreSQL unreachable: {exc}"
    return None


def test_sqlite_and_postgres_side_by_side_end_to_end(tmp_path, capsys):
    missing = _services_available()
    if missing:
        pytest.skip(missing)
    from bench.__main__ import main

    code = main(["--configs", "sqlite,postgres", *TINY, "--output", str(tmp_path)])
    results = json.loads((tmp_path / "latest.json").read_text())
    assert code == 0, {name: run.get("error") for name, run in results["configs"].items()}
    assert list(results["configs"]) == ["sqlite", "postgres"]
    assert results["configs"]["postgres"]["setup"]["backend"] == "postgres"
    for name, run in results["configs"].items():
        assert run["verify"]["lost"] == 0 and run["verify"]["not_final"] == 0, name
        assert run["verify"]["accepted"] > 0
        figures = results["side_by_side"]["figures"][name]
        assert figures["post_rps"] > 0 and figures["bare_rps"] > 0
        assert figures["e2e_orders_per_s"] > 0 and figures["e2e_p99_ms"] > 0
    ratios = results["side_by_side"]["ratios"]["postgres/sqlite"]
    assert ratios["e2e_orders_per_s"] > 0
    assert "Backends side by side" in capsys.readouterr().out
