"""The metrics' own logic, without a broker: names per service, the hooks, scrape-time gauges,
the /metrics routes, METRICS=off."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Histogram

from inventory_service import own_metrics as inventory_metrics
from messaging.amqp.confirms import InFlight
from messaging.db.outbox import PendingMessage
from messaging.events import Message
from messaging.observability import batch_meters, exposition, health, metrics
from messaging.settings import ConfigError, StorageSettings, service_settings
from notification_service import own_metrics as notification_metrics
from order_service import config
from order_service import own_metrics as order_metrics
from order_service.app import create_app
from order_service.store import OrderStore
from stack.metrics import Samples
from stack.processes import free_port

COMMON = {"broker_connected", "broker_reconnects_total"}
CONSUMER = {"messages_consumed_total", "messages_duplicate_total", "messages_dead_lettered_total",
            "message_handling_seconds", "message_handling_retries_total",
            "dead_letters_refused_total"}
OUTBOX = {"messages_published_total", "messages_publish_refused_total", "publish_confirm_seconds"}
HTTP = {"http_requests_total", "http_request_duration_seconds"}


@pytest.fixture
def on() -> Iterator[metrics.Metrics]:
    """Metrics of a NotificationService-like process on a private registry; off afterwards."""
    yield notification_metrics.configure(True, registry=CollectorRegistry())
    metrics.configure(False)


OWN = {"order-service": order_metrics, "inventory-service": inventory_metrics,
       "notification-service": notification_metrics}


def make(service: str) -> metrics.Metrics:
    """The metrics `service` makes at start-up, on a private registry."""
    return OWN[service].configure(True, registry=CollectorRegistry())


def families(m: metrics.Metrics) -> set[str]:
    """Every family the registry knows, by its exposed name (counters with _total)."""
    names = set()
    for family in m.registry.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def scrape() -> Samples:
    return Samples(exposition.text()[0].decode())


def row(n: int, exchange: str = "orders") -> PendingMessage:
    return PendingMessage(n, 0.0, Message(exchange, "k", b"{}", f"m{n}", f"o{n}", "T"))


@pytest.mark.parametrize(("service", "own"), [
    ("order-service", OUTBOX | {"orders_placed_total", "orders_replayed_total", "orders_completed_total",
                                "order_completion_seconds", "orders_rate_limited_total"}),
    ("inventory-service", OUTBOX),
    ("notification-service", {"notifications_sent_total"}),
])
def test_each_service_has_the_documented_names(service, own):
    try:
        assert families(make(service)) == COMMON | CONSUMER | HTTP | own
    finally:
        metrics.configure(False)


def test_off_means_every_hook_is_a_no_op_and_no_text():
    metrics.configure(False)
    assert metrics.publish_meter() is None
    meter = metrics.queue_meter("q")
    meter.settled(3, time.monotonic())
    meter.retried()
    metrics.link("x", True)
    metrics.duplicates("q", 1)
    metrics.http_request("GET", "/health", 200, 0.1)
    assert exposition.text() is None
    assert exposition.route() == (404, exposition.OFF)


def test_a_batch_counts_each_acked_message_and_its_handling_time(on):
    meter = metrics.queue_meter("order-events")
    meter.settled(3, time.monotonic() - 0.5)
    meter.settled(0, time.monotonic())
    meter.retried()
    metrics.duplicates("order-events", 2)
    metrics.duplicates("order-events", 0)
    metrics.dead_lettered("order-events", "malformed-json")
    metrics.dead_letter_refused("order-events", "nacked")
    s = scrape()
    assert s.value("messages_consumed_total", queue="order-events") == 3
    assert s.value("message_handling_seconds_count", queue="order-events") == 3
    assert 1.5 <= s.value("message_handling_seconds_sum", queue="order-events") < 2.0
    assert s.value("message_handling_retries_total", queue="order-events") == 1
    assert s.value("messages_duplicate_total", queue="order-events") == 2
    assert s.value("messages_dead_lettered_total", queue="order-events",
                   reason="malformed-json") == 1
    assert s.labelled("dead_letters_refused_total", "reason") == {"nacked": 1}


def test_connected_only_when_every_connection_is_up_and_a_second_up_is_a_reconnect(on):
    assert scrape().value("broker_connected") == 0
    metrics.link("loop", True)
    metrics.link("relay", True)
    metrics.link("relay", True)  # told twice: not a reconnect
    assert (scrape().value("broker_connected"), scrape().value("broker_reconnects_total")) == (1, 0)
    metrics.link("relay", False)
    assert scrape().value("broker_connected") == 0
    metrics.link("relay", True)
    assert (scrape().value("broker_connected"), scrape().value("broker_reconnects_total")) == (1, 1)


def test_a_link_that_never_came_up_is_no_reconnect_when_it_does(on):
    metrics.link("loop", False)
    metrics.link("loop", True)
    assert scrape().value("broker_reconnects_total") == 0


def test_confirms_count_by_exchange_and_refusals_by_reason():
    make("inventory-service")
    try:
        inflight = InFlight(metrics.publish_meter())
        for n in range(1, 5):
            inflight.add(row(n, "inventory"))
        inflight.returned("m2")
        assert inflight.settle(3, multiple=True, acked=True) == ([1, 3], [2])
        assert inflight.settle(4, multiple=False, acked=False) == ([], [4])
        s = scrape()
        assert s.labelled("messages_published_total", "exchange") == {"inventory": 2}
        assert s.value("publish_confirm_seconds_count") == 2
        assert s.labelled("messages_publish_refused_total", "reason") == {"unroutable": 1,
                                                                          "nacked": 1}
    finally:
        metrics.configure(False)


def test_order_completion_is_timed_from_created_at():
    make("order-service")
    try:
        order_metrics.order_placed()
        created = (datetime.now(UTC) - timedelta(seconds=2)).isoformat()[:-6] + "Z"
        order_metrics.orders_completed([("failed", created)])
        order_metrics.orders_completed([])
        s = scrape()
        assert s.value("orders_placed_total") == 1
        assert s.labelled("orders_completed_total", "status") == {"reserved": 0, "failed": 1}
        assert 2.0 <= s.value("order_completion_seconds_sum") < 3.0
    finally:
        metrics.configure(False)


def test_observe_many_equals_one_observe_per_amount():
    amounts = [0.0, 0.001, 0.0011, 0.3, 0.3, 5.0, 59.0, 1000.0, -1.0]
    one, many = (Histogram(f"h{n}", "h", registry=CollectorRegistry(),
                           buckets=metrics.LATENCY_BUCKETS) for n in (1, 2))
    for amount in amounts:
        one.observe(amount)
    batch_meters.observe_many(many, amounts)
    batch_meters.observe_many(many, [])
    samples = [[(s.name[2:], s.labels, s.value) for s in next(iter(h.collect())).samples
                if not s.name.endswith("_created")] for h in (one, many)]
    assert samples[0] == samples[1]


def test_http_children_are_looked_up_once_per_method_route_and_status(on):
    for _ in range(3):
        metrics.http_request("GET", "/health", 200, 0.01)
    metrics.http_request("GET", None, 404, 0.01)
    assert len(on.http_children) == 2
    s = scrape()
    assert s.value("http_requests_total", route="/health", status="200") == 3
    assert s.value("http_request_duration_seconds_count", route="<unmatched>") == 1


class Outbox:
    def __init__(self, answer) -> None:
        self.answer = answer

    def outbox_pending(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def stock_levels(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return [{"item": "Burger", "available": 7}]


def test_outbox_and_stock_gauges_are_read_when_scraped(on):
    store = Outbox((0, None))
    exposition.watch(exposition.OutboxCollector(store))
    inventory_metrics.watch_stock(store)
    s = scrape()
    assert (s.value("outbox_pending_messages"), s.value("outbox_oldest_message_age_seconds")) == (0, 0)
    assert s.value("stock_available", item="Burger") == 7
    store.answer = (3, time.time() - 10)
    s = scrape()
    assert s.value("outbox_pending_messages") == 3
    assert 10 <= s.value("outbox_oldest_message_age_seconds") < 12
    store.answer = RuntimeError("database is locked")
    names = scrape().names()
    assert "outbox_pending_messages" not in names, "left out, the scrape still works"
    assert "stock_available" not in names


def test_the_consumers_http_server_serves_the_text_and_counts_routes(on):
    port = free_port()
    server = health.serve(port, {"/metrics": exposition.route, "/health": lambda: (200, {})},
                          host="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/health?x=1", timeout=5).status_code == 200
        assert requests.get(f"{base}/nope/123", timeout=5).status_code == 404
        response = requests.get(f"{base}/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        s = Samples(response.text)
        assert s.value("http_requests_total", method="GET", route="/health", status="200") == 1
        assert s.value("http_requests_total", route="<unmatched>", status="404") == 1
    finally:
        server.shutdown()


def test_the_order_app_counts_requests_by_route_pattern(tmp_path: Path):
    make("order-service")
    settings = config.Settings(storage=StorageSettings(data_dir=str(tmp_path)))
    store = OrderStore.open(settings.storage)
    try:
        client = create_app(settings, store).test_client()
        order_id = client.post("/order", json={"user_id": "u", "item": "Burger",
                                               "quantity": 1}).get_json()["order_id"]
        assert client.get(f"/orders/{order_id}").status_code == 200
        assert client.get("/orders/unknown").status_code == 404
        assert client.post("/order", data="x", content_type="text/plain").status_code == 415
        response = client.get("/metrics")
        assert response.status_code == 200
        s = Samples(response.get_data(as_text=True))
        assert s.value("orders_placed_total") == 1
        assert s.labelled("http_requests_total", "route") == {"/order": 2, "/orders/<order_id>": 2}
        assert s.value("http_requests_total", route="/order", status="415") == 1
        assert s.value("http_requests_total", route="/orders/<order_id>", status="404") == 1
    finally:
        metrics.configure(False)
        store.close()


def test_the_order_app_answers_404_when_metrics_are_off(tmp_path: Path):
    metrics.configure(False)
    settings = config.Settings(storage=StorageSettings(data_dir=str(tmp_path)))
    store = OrderStore.open(settings.storage)
    try:
        response = create_app(settings, store).test_client().get("/metrics")
        assert response.status_code == 404
        assert response.get_json() == exposition.OFF
    finally:
        store.close()


def test_metrics_setting_is_on_by_default_and_checked():
    assert service_settings({})["metrics"] is True
    assert service_settings({"METRICS": "off"})["metrics"] is False
    assert service_settings({"METRICS": "ON"})["metrics"] is True
    with pytest.raises(ConfigError, match="METRICS must be one of ON, OFF"):
        service_settings({"METRICS": "maybe"})


def test_the_master_makes_a_private_directory_unless_one_is_given_and_forgets_dead_workers(
        tmp_path: Path, monkeypatch):
    monkeypatch.setenv(exposition.MULTIPROC_ENV, "")  # restored to unset (or as it was) after
    monkeypatch.delenv(exposition.MULTIPROC_ENV)
    private = exposition.prepare_multiprocess("order-service")
    try:
        assert Path(private).is_dir() and exposition.os.environ[exposition.MULTIPROC_ENV] == private
        assert Path(private).name.startswith("order-service-metrics-"), "named for the service"
        live = Path(private) / "gauge_livemin_4242.db"
        live.write_bytes(b"")
        exposition.worker_exited(4242)
        assert not live.exists(), "a dead worker's live gauges leave the sums"
    finally:
        exposition.remove(private)
    assert not Path(private).exists()
    given = tmp_path / "counts"
    monkeypatch.setenv(exposition.MULTIPROC_ENV, str(given))
    assert exposition.prepare_multiprocess("order-service") is None, "the operator's directory is used"
    assert given.is_dir(), "and made if missing"


def test_a_forked_worker_counts_in_files_of_its_own_pid(tmp_path: Path, monkeypatch):
    """The pid is cached for the multiprocess values, and taken again in a forked child."""
    monkeypatch.setenv(exposition.MULTIPROC_ENV, str(tmp_path))
    m = notification_metrics.configure(True, multiprocess=True)
    try:
        assert m is not None
        m.consumed.labels("q").inc()
        child = os.fork()
        if child == 0:  # the worker: count once, and leave without running the parent's cleanup
            try:
                m.consumed.labels("q").inc(2)
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert (tmp_path / f"counter_{child}.db").exists(), "the child counts in files of its own"
        assert Samples(exposition.text()[0].decode()).value(
            "messages_consumed_total", queue="q") == 3, "both processes' counts are summed"
    finally:
        metrics.configure(False)
