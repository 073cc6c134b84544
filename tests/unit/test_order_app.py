"""OrderService's HTTP shell through Flask's test client, with a real temporary store (no broker)."""
from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from messaging.db import outbox
from messaging.events import parse_order_placed
from messaging.settings import StorageSettings
from order_service import config, idempotency, own_metrics, page
from order_service.app import create_app
from order_service.handlers import ListQuery
from order_service.store import OrderStore
from tests.unit.factories import connect, finish

VALID = {"user_id": "user123", "item": "Burger", "quantity": 2}


class Relay:
    """The app's view of the outbox relay: `connected`, `claimant()` and a counted `hand_over()`."""

    owner = "test-relay"

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.wakes = 0
        self.rows: list = []

    def claimant(self) -> str | None:
        return self.owner if self.connected else None

    def hand_over(self, rows: list) -> None:
        self.wakes += 1
        self.rows.extend(rows)


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return config.Settings(storage=StorageSettings(data_dir=str(tmp_path), busy_timeout_ms=50))


@pytest.fixture
def store(settings: config.Settings) -> Iterator[OrderStore]:
    store = OrderStore.open(settings.storage)
    yield store
    store.close()


@pytest.fixture
def relay() -> Relay:
    return Relay()


@pytest.fixture
def client(settings, store, relay) -> FlaskClient:
    return create_app(settings, store, relay).test_client()


def post(client: FlaskClient, payload=VALID, **kwargs):
    return client.post("/order", json=payload, **kwargs)


def assert_nothing_stored(store: OrderStore) -> None:
    assert store.find(ListQuery()).count == 0
    assert store.outbox_backlog() == 0


# --- POST /order ---

def test_post_order_is_accepted_with_the_spec_body(client, store, relay):
    response = post(client)
    assert response.status_code == 202
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"order_id", "status", "message", "timestamp"}
    assert uuid.UUID(body["order_id"])
    assert body["status"] == "accepted"
    assert body["message"] == "Order received and being processed"
    assert body["timestamp"].endswith("Z")
    assert response.headers["Location"] == f"/orders/{body['order_id']}"
    assert relay.wakes == 1


def test_post_order_stores_the_order_and_exactly_one_outbox_row(client, store):
    body = post(client).get_json()
    order = store.get(body["order_id"])
    assert (order.status, order.user_id, order.item, order.quantity) == (
        "accepted", "user123", "Burger", 2)
    assert order.created_at == body["timestamp"]
    assert store.outbox_backlog() == 1
    assert outbox.claim(store.conn, "another-relay", 10, 30.0) == [], "born claimed by our relay"
    outbox.release_all(store.conn)
    [pending] = outbox.claim(store.conn, "test", 10, -1.0)
    assert (pending.message.exchange, pending.message.routing_key) == ("orders", "order.placed")
    event = parse_order_placed(pending.message.body)
    assert (event.order_id, event.user_id, event.item, event.quantity) == (
        body["order_id"], "user123", "Burger", 2)
    assert pending.message.message_id == event.event_id


def test_a_connected_relay_gets_the_new_row_in_memory(client, store, relay):
    body = post(client).get_json()
    [row] = relay.rows
    assert row.message.correlation_id == body["order_id"]
    assert store.outbox_backlog() == 1


def test_a_disconnected_relay_gets_no_row_and_the_row_stays_unclaimed(settings, store):
    relay = Relay(connected=False)
    create_app(settings, store, relay).test_client().post("/order", json=VALID)
    assert relay.rows == [] and relay.wakes == 1
    assert len(outbox.claim(store.conn, "any-relay", 10, 30.0)) == 1


def test_each_post_is_a_new_order(client, store, relay):
    ids = {post(client).get_json()["order_id"] for _ in range(3)}
    assert len(ids) == 3
    assert store.outbox_backlog() == 3
    assert relay.wakes == 3


def test_post_without_a_publisher_still_accepts(settings, store):
    client = create_app(settings, store, None).test_client()
    assert post(client).status_code == 202
    assert store.outbox_backlog() == 1


def test_charset_in_content_type_is_fine(client):
    response = client.post("/order", data=json.dumps(VALID),
                           content_type="application/json; charset=utf-8")
    assert response.status_code == 202


@pytest.mark.parametrize("payload, field, problem", [
    ({"item": "Burger", "quantity": 2}, "user_id", "is required"),
    ({"user_id": "u", "quantity": 2}, "item", "is required"),
    ({"user_id": "u", "item": "Burger"}, "quantity", "is required"),
    ({**VALID, "price": 9.5}, "price", "is not a known field"),
    ({**VALID, "quantity": True}, "quantity", "must be an integer"),
    ({**VALID, "quantity": "2"}, "quantity", "must be an integer"),
    ({**VALID, "quantity": 2.5}, "quantity", "must be an integer"),
    ({**VALID, "quantity": None}, "quantity", "must be an integer"),
    ({**VALID, "quantity": 0}, "quantity", "must be between 1 and 100"),
    ({**VALID, "quantity": 1000}, "quantity", "must be between 1 and 100"),
    ({**VALID, "quantity": -1}, "quantity", "must be between 1 and 100"),
    ({**VALID, "user_id": ""}, "user_id", "must be a non-empty string"),
    ({**VALID, "user_id": "   "}, "user_id", "must be a non-empty string"),
    ({**VALID, "item": "x" * 65}, "item", "must be at most 64 characters"),
    ([VALID], "body", "must be a JSON object"),
    ("Burger", "body", "must be a JSON object"),
    (None, "body", "must be a JSON object"),
])
def test_bad_order_is_a_400_naming_the_problem(client, store, relay, payload, field, problem):
    response = client.post("/order", data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 400
    assert response.is_json
    body = response.get_json()
    assert body["errors"][field] == problem
    assert field in body["error"]
    assert_nothing_stored(store)
    assert relay.wakes == 0


def test_all_problems_are_listed(client, store):
    response = post(client, {"user_id": "", "quantity": "many", "size": "L"})
    assert response.status_code == 400
    assert response.get_json()["errors"] == {"size": "is not a known field",
                                             "user_id": "must be a non-empty string",
                                             "item": "is required",
                                             "quantity": "must be an integer"}
    assert_nothing_stored(store)


@pytest.mark.parametrize("data", [b"not json", b'{"user_id": ', b"", b"\xff\xfe\x00"])
def test_non_json_body_is_a_400(client, store, data):
    response = client.post("/order", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["errors"] == {"body": "must be valid JSON"}
    assert_nothing_stored(store)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_wrong_content_type_is_a_415(client, store, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post("/order", data=json.dumps(VALID), **kwargs)
    assert response.status_code == 415
    assert response.get_json() == {"error": "Content-Type must be application/json", "status": 415}
    assert_nothing_stored(store)


def test_a_whole_number_written_with_a_fraction_is_that_number(client, store):
    # JSON (and the OpenAPI description's "integer") does not tell 2.0 from 2.
    response = post(client, {**VALID, "quantity": 2.0})
    assert response.status_code == 202
    order_id = response.get_json()["order_id"]
    assert client.get(f"/orders/{order_id}").get_json()["quantity"] == 2
    assert post(client, {**VALID, "quantity": 2.5}).get_json()["errors"] == {
        "quantity": "must be an integer"}


@pytest.mark.parametrize("field", ["user_id", "item"])
def test_text_with_a_nul_character_is_a_400(client, store, field):
    # PostgreSQL text cannot hold U+0000: storing it was a 500 there.
    response = post(client, {**VALID, field: "a\x00b"})
    assert response.status_code == 400
    assert response.get_json()["errors"] == {field: "must be valid Unicode text without NUL characters"}
    assert_nothing_stored(store)


def test_body_over_16_kib_is_a_413_json(client, store, relay):
    payload = {**VALID, "user_id": "x" * (16 * 1024)}
    response = post(client, payload)
    assert response.status_code == 413
    assert response.is_json
    body = response.get_json()
    assert body["status"] == 413
    assert body["error"]
    assert_nothing_stored(store)
    assert relay.wakes == 0


def test_body_just_under_the_limit_is_read(client, store):
    data = json.dumps({**VALID, "user_id": "u"}).encode()
    data += b" " * (16 * 1024 - len(data))
    response = client.post("/order", data=data, content_type="application/json")
    assert response.status_code == 202
    assert store.outbox_backlog() == 1


def test_deeply_nested_json_is_a_400(client, store):
    data = b"[" * 2000 + b"]" * 2000
    response = client.post("/order", data=data, content_type="application/json")
    assert response.status_code == 400
    assert_nothing_stored(store)


def test_text_that_cannot_be_stored_is_a_400(client, store):
    data = b'{"user_id": "\\ud800", "item": "Burger", "quantity": 1}'
    response = client.post("/order", data=data, content_type="application/json")
    assert response.status_code == 400
    assert "user_id" in response.get_json()["errors"]
    assert_nothing_stored(store)


# --- POST /order with an Idempotency-Key ---

def keyed(client: FlaskClient, key: str = "tap-1", payload=VALID, **kwargs):
    return post(client, payload, headers={"Idempotency-Key": key}, **kwargs)


def test_a_retry_with_the_same_key_is_the_original_answer_not_a_second_order(client, store, relay):
    first = keyed(client)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    for _ in range(3):
        again = keyed(client, payload=dict(reversed(list(VALID.items()))))  # the same order
        assert again.status_code == 202
        assert again.get_json() == first.get_json()
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["Idempotent-Replayed"] == "true"
    assert store.find(ListQuery()).count == 1
    assert store.outbox_backlog() == 1
    assert relay.wakes == 1 and len(relay.rows) == 1


def test_the_key_may_be_sent_as_a_structured_field_string(client, store):
    first = keyed(client, '"tap-1"')
    assert keyed(client, "tap-1").get_json()["order_id"] == first.get_json()["order_id"]
    assert store.find(ListQuery()).count == 1


def test_the_same_key_with_a_different_order_is_a_422_and_changes_nothing(client, store):
    first = keyed(client).get_json()
    refused = keyed(client, payload={**VALID, "quantity": 3})
    assert refused.status_code == 422
    assert refused.get_json() == {
        "error": "Idempotency-Key 'tap-1' was already used for a different order; "
                 "use a fresh key for a new order", "status": 422}
    [order] = store.find(ListQuery()).orders
    assert (order.order_id, order.quantity) == (first["order_id"], 2)


def test_a_retry_while_the_first_is_in_progress_is_a_409_and_changes_nothing(client, store):
    asked = idempotency.request_key("tap-1", None, VALID)
    with client.application.extensions["keys_in_progress"].claim(asked):
        refused = keyed(client)
    assert refused.status_code == 409
    assert refused.headers["Retry-After"] == "1"
    assert refused.get_json() == {"error": "a request with Idempotency-Key 'tap-1' is still in "
                                           "progress; retry shortly", "status": 409}
    assert_nothing_stored(store)
    assert keyed(client).status_code == 202  # once the first is done


def test_keys_are_each_users_own(client, store):
    alice = keyed(client, payload={**VALID, "user_id": "alice"}).get_json()
    bob = keyed(client, payload={**VALID, "user_id": "bob"}).get_json()
    assert alice["order_id"] != bob["order_id"]
    assert store.find(ListQuery()).count == 2


def test_without_a_key_every_post_is_a_new_order_as_before(client, store):
    post(client)
    post(client)
    assert store.find(ListQuery()).count == 2


@pytest.mark.parametrize("key", ["", "k" * 256, "two words", "caf\u00e9"])
def test_a_malformed_key_is_a_400_and_stores_nothing(client, store, key):
    header = key.encode().decode("latin-1")  # as the bytes arrive
    response = client.post("/order", json=VALID, headers=[("Idempotency-Key", header)])
    assert response.status_code == 400
    assert response.get_json()["errors"] == {"Idempotency-Key": idempotency.KEY_PROBLEM}
    assert_nothing_stored(store)


def test_an_invalid_order_with_a_key_is_a_400_and_leaves_the_key_free(client, store):
    assert keyed(client, payload={**VALID, "quantity": 0}).status_code == 400
    assert_nothing_stored(store)
    assert keyed(client).status_code == 202


def test_a_replay_is_counted(settings, store, relay):
    registry = CollectorRegistry()
    own_metrics.configure(True, registry=registry)
    try:
        client = create_app(settings, store, relay).test_client()
        keyed(client)
        keyed(client)
        keyed(client)
        assert registry.get_sample_value("orders_replayed_total") == 2
        assert registry.get_sample_value("orders_placed_total") == 1
    finally:
        own_metrics.configure(False)


# --- GET /orders/{id}, errors ---

def test_get_order(client):
    order_id = post(client).get_json()["order_id"]
    response = client.get(f"/orders/{order_id}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["order_id"] == order_id
    assert (body["status"], body["user_id"], body["item"], body["quantity"]) == (
        "accepted", "user123", "Burger", 2)
    assert "reason" not in body


def test_get_failed_order_shows_the_reason(client, store):
    order_id = post(client).get_json()["order_id"]
    store.write(lambda conn: finish(store, conn, order_id, "failed", "unknown item: Burger",
                                          "2030-01-01T00:00:00Z"))
    body = client.get(f"/orders/{order_id}").get_json()
    assert (body["status"], body["reason"]) == ("failed", "unknown item: Burger")


def test_get_unknown_order_is_a_404_json(client):
    order_id = str(uuid.uuid4())
    response = client.get(f"/orders/{order_id}")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json() == {"error": f"order {order_id} not found", "status": 404}


def test_nul_characters_are_answered_before_any_store_sees_them(order_store, backend):
    # PostgreSQL text cannot hold U+0000: each of these was a 500 there.
    client = create_app(config.Settings(), order_store, Relay()).test_client()
    assert post(client, {**VALID, "item": "a\x00"}).status_code == 400
    assert client.get("/orders?user_id=a%00").status_code == 400
    missing = client.get("/orders/a%00b")
    assert (missing.status_code, missing.get_json()["status"]) == (404, 404)


def test_unknown_route_is_a_404_json(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["status"] == 404
    assert response.get_json()["error"]


@pytest.mark.parametrize("method, path", [("get", "/order"), ("put", "/order"),
                                          ("delete", "/orders/x"), ("post", "/orders"),
                                          ("post", "/health")])
def test_wrong_method_is_a_405_json(client, store, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert response.is_json
    assert response.get_json()["status"] == 405
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}  # RFC 9110
    assert ("POST" if path == "/order" else "GET") in allowed and method.upper() not in allowed
    assert_nothing_stored(store)


# --- GET /orders ---

def test_list_orders_empty(client):
    response = client.get("/orders")
    assert response.status_code == 200
    assert response.get_json() == {"orders": [], "next": None, "count": 0, "count_capped": False}


def test_list_orders_newest_first_with_count(client):
    ids = [post(client, {**VALID, "user_id": f"u{n}"}).get_json()["order_id"] for n in range(4)]
    body = client.get("/orders").get_json()
    assert body["count"] == 4
    assert [o["order_id"] for o in body["orders"]] == list(reversed(ids))


def test_list_orders_limit_and_offset(client):
    ids = [post(client).get_json()["order_id"] for _ in range(5)][::-1]
    body = client.get("/orders?limit=2&offset=1").get_json()
    assert body["count"] == 5
    assert [o["order_id"] for o in body["orders"]] == ids[1:3]


def test_list_orders_pages_with_the_cursor_it_answers(client):
    ids = [post(client, {**VALID, "user_id": f"u{n}"}).get_json()["order_id"] for n in range(5)][::-1]
    first = client.get("/orders?limit=2").get_json()
    assert [o["order_id"] for o in first["orders"]] == ids[:2] and isinstance(first["next"], str)
    second = client.get(f"/orders?limit=2&before={first['next']}").get_json()
    third = client.get(f"/orders?limit=2&before={second['next']}").get_json()
    assert [o["order_id"] for o in second["orders"] + third["orders"]] == ids[2:]
    assert third["next"] is None and third["count"] == 5


def test_list_orders_filters(client, store):
    alice = [post(client, {**VALID, "user_id": "alice"}).get_json()["order_id"] for _ in range(2)]
    bob = post(client, {**VALID, "user_id": "bob"}).get_json()["order_id"]
    store.write(lambda conn: finish(store, conn, alice[0], "reserved", None, "2030-01-01T00:00:00Z"))
    by_user = client.get("/orders?user_id=alice").get_json()
    assert (by_user["count"], [o["order_id"] for o in by_user["orders"]]) == (2, alice[::-1])
    reserved = client.get("/orders?status=reserved").get_json()
    assert [o["order_id"] for o in reserved["orders"]] == [alice[0]]
    accepted = client.get("/orders?status=accepted&user_id=bob").get_json()
    assert [o["order_id"] for o in accepted["orders"]] == [bob]
    assert client.get("/orders?status=failed").get_json() == {"orders": [], "next": None, "count": 0,
                                                              "count_capped": False}


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=501", "limit"),
                                          ("limit=abc", "limit"), ("offset=-1", "offset"),
                                          ("offset=10001", "offset"), ("before=0", "before"),
                                          ("before=x", "before"), ("before=", "before"),
                                          ("status=done", "status"), ("sort=asc", "sort"),
                                          ("user_id=a%00", "user_id")])
def test_list_orders_bad_query_is_a_400(client, query, field):
    response = client.get(f"/orders?{query}")
    assert response.status_code == 400
    assert response.is_json
    assert field in response.get_json()["errors"]


def test_list_orders_superscript_limit_is_a_400(client):
    response = client.get("/orders?limit=%C2%B2")
    assert response.status_code == 400


# --- GET /health ---

@pytest.mark.parametrize("connected, broker", [(True, "connected"), (False, "disconnected")])
def test_health(settings, store, connected, broker):
    client = create_app(settings, store, Relay(connected=connected)).test_client()
    post(client)
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "healthy", "service": "order-service",
                                   "database": "writable", "broker": broker,
                                   "outbox_backlog": 1}


def test_health_without_a_publisher_reports_broker_disconnected(settings, store):
    client = create_app(settings, store, None).test_client()
    assert client.get("/health").get_json()["broker"] == "disconnected"


def test_health_is_503_when_the_database_cannot_be_written(client, store):
    post(client)
    blocker = sqlite3.connect(store.db.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        response = client.get("/health")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["database"]) == ("unhealthy", "unavailable")
    assert body["outbox_backlog"] == 1
    assert client.get("/health").status_code == 200, "healthy again once the lock is gone"


def test_post_while_the_database_is_locked_is_a_503_json_and_stores_nothing(client, store):
    holder = connect(store.db)
    holder.execute("BEGIN IMMEDIATE")
    try:
        response = post(client)
    finally:
        holder.execute("ROLLBACK")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "retry" in response.get_json()["error"]
    assert_nothing_stored(store)


# --- security headers ---

API_HEADERS = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               "Cross-Origin-Opener-Policy": "same-origin"}


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/order", VALID, 202), ("POST", "/order", {"user_id": ""}, 400),
    ("POST", "/order", "[]", 415), ("GET", "/orders", None, 200), ("GET", "/orders?limit=0", None, 400),
    ("GET", f"/orders/{uuid.uuid4()}", None, 404), ("GET", "/health", None, 200),
    ("GET", "/openapi.json", None, 200), ("GET", "/metrics", None, 404),  # metrics not configured here
    ("DELETE", "/order", None, 405),
    ("GET", "/no/such/route", None, 404),
])
def test_every_api_answer_carries_the_security_headers(client, method, path, body, status):
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body} if body else {}
    response = client.open(path, method=method, **kwargs)
    assert response.status_code == status
    assert {name: response.headers.get(name) for name in API_HEADERS} == API_HEADERS


@pytest.mark.parametrize("path", ["/", "/orders/board", "/static/page.js"])
def test_the_page_keeps_its_own_policy(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == page.CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
