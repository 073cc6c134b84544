"""Static checks of the monitoring profile: RabbitMQ's Prometheus plugin on every node, Prometheus
finding every replica of the three services and every broker node, Grafana's provisioning and its
dashboard. Like test_compose.py, no container engine: `docker-compose config` and the files.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import dashboard
from tests.integration.test_compose import (
    APPS,
    BASE,
    CLUSTER,
    MONITORING,
    ROOT,
    brokers,
    load_yaml,
    mounts,
    ports,
    resolved,
)

PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
BROKER_METRICS_PORT = 15692  # rabbitmq_prometheus's default listener
PANELS = ["Orders per second by status", "Completion latency p50 and p99", "Outbox backlog and age",
          "Queue depths", "Dead letters by reason", "Reconnects"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved(BASE)


@pytest.fixture(scope="module", params=["single broker", "cluster"])
def either(request: pytest.FixtureRequest) -> dict[str, Any]:
    return resolved(BASE if request.param == "single broker" else CLUSTER)


def started(compose: dict[str, Any], *profiles: str) -> set[str]:
    """The services `docker compose [--profile p ...] up` starts: those without profiles, and
    those in an enabled one."""
    return {name for name, service in compose["services"].items()
            if not service.get("profiles") or set(service["profiles"]) & set(profiles)}


def prometheus_config(compose: dict[str, Any]) -> dict[str, Any]:
    source = Path(mounts(compose["services"]["prometheus"])[PROMETHEUS_CONFIG])
    assert source == ROOT / "compose" / "prometheus" / "prometheus.yml"
    return load_yaml(source.read_text())


def jobs(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in prometheus_config(compose)["scrape_configs"]}


def test_monitoring_services_start_only_with_their_profile(either: dict[str, Any]) -> None:
    services = either["services"]
    assert started(either) == set(services) - MONITORING, "plain `up` must start what it did"
    assert started(either, "monitoring") == set(services)
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"]
        assert services[name]["restart"] == "unless-stopped"
        image, _, tag = services[name]["image"].partition(":")
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name} pins its image version"
    for name in set(services) - MONITORING:
        assert not set(services[name].get("depends_on") or {}) & MONITORING, \
            f"{name} would pull the monitoring profile into a plain `up`"
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert "/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])


def test_every_broker_node_serves_its_prometheus_metrics(either: dict[str, Any]) -> None:
    for name, service in brokers(either).items():
        plugins = service["environment"]["RABBITMQ_ENABLED_PLUGINS"].split(",")
        assert {"rabbitmq_prometheus", "rabbitmq_management"} <= set(plugins), name
        assert str(BROKER_METRICS_PORT) in [str(port) for port in service.get("expose", [])]


def test_prometheus_discovers_every_replica_of_each_service_on_its_port(
        either: dict[str, Any]) -> None:
    found = jobs(either)
    assert set(found) == {*APPS, "rabbitmq"}
    assert prometheus_config(either)["global"]["scrape_interval"]
    for name, (_, port, _, load) in APPS.items():
        job = found[name]
        assert "static_configs" not in job, "fixed targets miss the replicas --scale adds"
        assert job.get("metrics_path", "/metrics") == "/metrics"
        environment = either["services"][name]["environment"]
        assert environment["PORT"] == str(port)
        # OrderService serves /metrics on its METRICS_PORT only, off the gateway's port.
        scraped = getattr(load(environment), "metrics_port", None) or port
        assert job["dns_sd_configs"] == [{"names": [name], "type": "A", "port": scraped,
                                          "refresh_interval": "10s"}]
        assert str(scraped) in [str(p) for p in either["services"][name]["expose"]]


def test_prometheus_scrapes_every_broker_node_per_queue(either: dict[str, Any]) -> None:
    job = jobs(either)["rabbitmq"]
    assert "static_configs" not in job
    # One series per queue: the aggregated /metrics would sum every queue into one.
    assert job["metrics_path"] == "/metrics/per-object"
    [discovery] = job["dns_sd_configs"]
    assert (discovery["type"], discovery["port"]) == ("A", BROKER_METRICS_PORT)
    assert set(brokers(either)) <= set(discovery["names"])
    assert set(discovery["names"]) <= set(brokers(resolved(CLUSTER))), "names no node has"


def test_prometheus_shares_the_network_of_what_it_scrapes(either: dict[str, Any]) -> None:
    services = either["services"]
    networks = set(services["prometheus"]["networks"])
    for name in [*APPS, *brokers(either), "grafana"]:
        assert networks & set(services[name]["networks"]), name


def grafana_files(compose: dict[str, Any]) -> tuple[Path, Path, str]:
    """The provisioning and dashboards directories Grafana mounts, and where the dashboards are
    in the container."""
    volumes = mounts(compose["services"]["grafana"])
    provisioning = Path(volumes["/etc/grafana/provisioning"])
    [(target, source)] = [(t, s) for t, s in volumes.items() if t.startswith("/etc/grafana/dash")]
    assert provisioning == ROOT / "compose" / "grafana" / "provisioning"
    assert Path(source) == ROOT / "compose" / "grafana" / "dashboards"
    return provisioning, Path(source), target


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose: dict[str, Any]) -> None:
    provisioning, dashboards, target = grafana_files(compose)
    [source] = load_yaml((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert (source["type"], source["uid"], source["access"]) == ("prometheus", "prometheus", "proxy")
    url = urlsplit(source["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert 9090 in [target for _, _, target in ports(compose["services"]["prometheus"])]
    [provider] = load_yaml((provisioning / "dashboards" / "campus-food.yml").read_text())["providers"]
    assert (provider["type"], provider["options"]["path"]) == ("file", target)
    environment = compose["services"]["grafana"]["environment"]
    home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(target + "/")
    assert dashboards / home[len(target) + 1:] == dashboard.DASHBOARD
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false", "a login to see a dashboard"
    assert sorted(dashboards.iterdir()) == [dashboard.DASHBOARD]


def test_dashboard_has_the_six_panels_on_the_provisioned_source() -> None:
    board = json.loads(dashboard.DASHBOARD.read_text())
    assert board["uid"] and board["title"]
    panels = list(dashboard.panels(board))
    assert [panel["title"] for panel in panels] == PANELS
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()
    queries = dashboard.queries(board)  # raises on a function PromQL does not have
    assert all(query.metrics for query in queries)
    assert len({panel["id"] for panel in panels}) == len(panels)


def test_dashboard_queries_ask_for_what_each_panel_shows() -> None:
    by_panel: dict[str, set[str]] = {}
    for query in dashboard.queries(dashboard.load()):
        by_panel.setdefault(query.panel, set()).update(query.metrics)
    assert by_panel == {
        "Orders per second by status": {"orders_placed_total", "orders_completed_total"},
        "Completion latency p50 and p99": {"order_completion_seconds_bucket"},
        "Outbox backlog and age": {"outbox_pending_messages", "outbox_oldest_message_age_seconds"},
        "Queue depths": {"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked"},
        "Dead letters by reason": {"messages_dead_lettered_total"},
        "Reconnects": {"broker_reconnects_total", "broker_connected"},
    }
    exprs = [query.expr for query in dashboard.queries(dashboard.load())]
    assert any("histogram_quantile(0.5," in expr for expr in exprs)
    assert any("histogram_quantile(0.99," in expr for expr in exprs)
