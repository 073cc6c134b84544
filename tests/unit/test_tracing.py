"""OpenTelemetry spans: asked for by the standard variables, linked to the propagated context."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from messaging.events import Message
from messaging.observability import spans
from messaging.settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{SPAN}-01"


@pytest.fixture
def console(capsys) -> Iterator[callable]:
    """The SDK with the console exporter; call the fixture to flush and read the spans."""
    assert spans.configure("unit-service", {"OTEL_TRACES_EXPORTER": "console"})

    def exported() -> list[dict]:
        spans.shutdown()
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    yield exported
    spans.shutdown()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, ()), ({"OTEL_TRACES_EXPORTER": "none"}, ()), ({"OTEL_TRACES_EXPORTER": ""}, ()),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
    ({"OTEL_TRACES_EXPORTER": "console, OTLP"}, ("console", "otlp")),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, ()),
])
def test_exporters_come_from_the_standard_variables(env, expected):
    assert spans.exporters(env) == expected


@pytest.mark.parametrize(("env", "problem"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER must be a comma-separated list"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf"),
])
def test_a_bad_exporter_setting_is_a_configuration_error(env, problem):
    with pytest.raises(ConfigError, match=problem):
        spans.exporters(env)


def test_without_an_exporter_no_sdk_is_installed_and_ids_still_propagate():
    assert spans.configure("unit-service", {}) is False and not spans.enabled()
    span = spans.start("POST /order", spans.SERVER, PARENT)
    assert span.context.trace_id == TRACE and span.context.span_id != SPAN
    span.set("ignored", 1)
    span.end()
    assert spans.start("POST /order", spans.SERVER, None).context.trace_id != TRACE


def test_spans_continue_the_propagated_context_and_link_up(console):
    server = spans.start("POST /order", spans.SERVER, PARENT)
    message = Message("orders", "order.placed", b"{}", "event-1", "order-1", "OrderPlaced",
                      server.context.header())
    publish = spans.publish_span(message)
    properties = pika.BasicProperties(message_id="event-1", correlation_id="order-1",
                                      headers={"traceparent": publish.context.header()})
    process = spans.consume_span("order-events", properties)
    for span in (process, publish):
        span.end()
    server.set("http.response.status_code", 503)
    server.end("503")
    exported = {s["name"]: s for s in console()}
    assert set(exported) == {"POST /order", "orders publish", "order-events process"}
    assert {s["context"]["trace_id"] for s in exported.values()} == {f"0x{TRACE}"}
    assert exported["POST /order"]["parent_id"] == f"0x{SPAN}"
    assert exported["orders publish"]["parent_id"] == exported["POST /order"]["context"]["span_id"]
    assert exported["order-events process"]["parent_id"] == exported["orders publish"]["context"]["span_id"]
    assert exported["order-events process"]["context"]["span_id"] == f"0x{process.context.span_id}"
    assert exported["POST /order"]["status"] == {"status_code": "ERROR", "description": "503"}
    assert exported["orders publish"]["kind"] == "SpanKind.PRODUCER"
    assert exported["orders publish"]["attributes"]["messaging.message.conversation_id"] == "order-1"
    assert exported["POST /order"]["resource"]["attributes"]["service.name"] == "unit-service"


def test_otel_service_name_overrides_the_service_name(capsys):
    spans.configure("unit-service", {"OTEL_TRACES_EXPORTER": "console",
                                     "OTEL_SERVICE_NAME": "kitchen"})
    spans.start("x", spans.SERVER, None).end()
    spans.shutdown()
    span = json.loads(capsys.readouterr().out)
    assert span["resource"]["attributes"]["service.name"] == "kitchen"
    assert span["parent_id"] is None, "no traceparent: a new trace"


@pytest.mark.parametrize("module", ["notification_service", "order_service"])
def test_a_service_with_a_bad_exporter_exits_2_with_one_line(module, tmp_path):
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin", "DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.endswith("configuration error: OTEL_TRACES_EXPORTER must be a comma-separated "
                         "list of console, otlp, none, got 'zipkin'")


def test_polled_routes_make_no_span_and_an_order_does(console, tmp_path):
    from messaging.settings import StorageSettings
    from order_service import config
    from order_service.app import create_app
    from order_service.store import OrderStore

    store = OrderStore.open(StorageSettings(data_dir=str(tmp_path)))
    client = create_app(config.load(), store, None).test_client()
    for path in ("/health", "/metrics", "/orders/board"):
        client.get(path)
    client.post("/order", json={"user_id": "u", "item": "Burger", "quantity": 1})
    store.close()
    assert [span["name"] for span in console()] == ["POST /order"]
