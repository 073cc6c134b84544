"""One trace per order, across the three real service processes: JSON logs and exported spans."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.client import get_order, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SERVICES = ("order", "inventory", "notification")


def json_lines(text: str) -> list[dict]:
    """Every line of a log that is a JSON object (a crash report would not be)."""
    objects = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            objects.append(value)
    return objects


def post(stack, traceparent: str | None) -> str:
    headers = {"traceparent": traceparent} if traceparent else {}
    response = requests.post(f"{stack.order_url}/order", headers=headers, timeout=5,
                             json={"user_id": "user123", "item": "Burger", "quantity": 1})
    assert response.status_code == 202
    order_id = response.json()["order_id"]
    wait_for(lambda: get_order(stack.order_url, order_id)["status"] == "reserved",
             what="the order to be reserved")
    return order_id


def order_lines(stack, order_id: str) -> dict[str, list[dict]]:
    """service -> the JSON log records about `order_id`, once the notification is logged."""
    def notified() -> bool:
        return any(r["message"].startswith("Notification sent")
                   for r in json_lines(stack["notification"].log()) if r.get("order_id") == order_id)

    wait_for(notified, what="the notification's log line")
    wait_for(lambda: any(r.get("order_id") == order_id and r["message"].startswith("Order reserved")
                         for r in json_lines(stack["order"].log())), what="the status line")
    return {name: [r for r in json_lines(stack[name].log()) if r.get("order_id") == order_id]
            for name in SERVICES}


def test_every_log_line_of_an_order_carries_the_trace_id_it_was_posted_with(make_stack):
    stack = make_stack(LOG_FORMAT="json").start()
    order_id = post(stack, TRACEPARENT)
    lines = order_lines(stack, order_id)
    expected = {"order": ["Order accepted", "Order reserved"], "inventory": ["Inventory reserved"],
                "notification": ["Notification sent"]}
    for name, starts in expected.items():
        for start in starts:
            assert any(r["message"].startswith(start) for r in lines[name]), (name, start, lines[name])
        for record in lines[name]:
            assert record["trace_id"] == TRACE_ID, (name, record)
            assert {"timestamp", "level", "service", "logger", "message", "event_id"} <= set(record)
            assert record["service"] == f"{name}-service"
    # A request without a (valid) traceparent begins a trace of its own, followed just the same.
    for header in (None, f"00-{'0' * 32}-{PARENT_ID}-01"):
        other = order_lines(stack, post(stack, header))
        trace_ids = {r["trace_id"] for records in other.values() for r in records}
        assert len(trace_ids) == 1 and TRACE_ID not in trace_ids and "0" * 32 not in trace_ids
    gunicorn = [r for r in json_lines(stack["order"].log()) if r["logger"] == "gunicorn.error"]
    assert any(r["message"].startswith("Booting worker") for r in gunicorn)


def spans(stack) -> list[dict]:
    """Every span the console exporter printed, in all three services."""
    return [r | {"service": name} for name in SERVICES for r in json_lines(stack[name].log())
            if "context" in r and "parent_id" in r]


def test_spans_of_the_request_the_publishes_and_the_consumers_form_one_trace(make_stack):
    stack = make_stack(LOG_FORMAT="json", OTEL_TRACES_EXPORTER="console",
                       OTEL_BSP_SCHEDULE_DELAY="50").start()
    order_id = post(stack, TRACEPARENT)
    order_lines(stack, order_id)
    names = {"POST /order", "orders publish", "order-events process", "inventory publish",
             "inventory-events process", "order-status process"}

    def in_trace() -> dict[str, dict]:
        found = {s["name"]: s for s in spans(stack) if s["context"]["trace_id"] == f"0x{TRACE_ID}"}
        return found if names <= set(found) else {}

    found = wait_for(in_trace, what="all six spans of the order's trace")
    parents = {"POST /order": f"0x{PARENT_ID}", "orders publish": "POST /order",
               "order-events process": "orders publish", "inventory publish": "order-events process",
               "inventory-events process": "inventory publish",
               "order-status process": "inventory publish"}
    for name, parent in parents.items():
        parent_id = parent if parent.startswith("0x") else found[parent]["context"]["span_id"]
        assert found[name]["parent_id"] == parent_id, (name, found[name], found.get(parent))
    assert found["POST /order"]["service"] == "order"
    assert found["POST /order"]["resource"]["attributes"]["service.name"] == "order-service"
    assert found["order-events process"]["service"] == "inventory"
    assert found["inventory-events process"]["service"] == "notification"
    assert found["POST /order"]["attributes"]["http.response.status_code"] == 202
    # The log lines of the order name the spans they were written in.
    inventory = [r for r in json_lines(stack["inventory"].log()) if r.get("order_id") == order_id]
    assert {r["span_id"] for r in inventory} == {found["order-events process"]["context"]["span_id"][2:]}


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP receiver: keeps (service.name, span name, trace id) of every span it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[tuple[str, str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = ExportTraceServiceRequest.FromString(
            self.rfile.read(int(self.headers["Content-Length"])))
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")
            self.server.spans += [(service, span.name, span.trace_id.hex())
                                  for scope in resource_spans.scope_spans for span in scope.spans]
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_otlp_endpoint_alone_turns_the_otlp_exporter_on(make_stack, collector):
    stack = make_stack(OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
                       OTEL_BSP_SCHEDULE_DELAY="50").start()
    post(stack, TRACEPARENT)
    expected = {("order-service", "POST /order"), ("order-service", "orders publish"),
                ("inventory-service", "order-events process"),
                ("inventory-service", "inventory publish"),
                ("order-service", "order-status process"),
                ("notification-service", "inventory-events process")}
    wait_for(lambda: expected <= {(service, name) for service, name, trace in collector.spans
                                  if trace == TRACE_ID}, what="the six spans at the collector")
