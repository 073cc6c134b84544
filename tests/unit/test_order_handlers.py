"""The order domain: validation, placing, the 202 body, final status and list queries."""
from __future__ import annotations

import json
import uuid

import pytest

from messaging.events import INVENTORY_FAILED, INVENTORY_RESERVED, parse_order_placed
from order_service import handlers
from order_service.handlers import InvalidRequest, ListQuery
from tests.unit.factories import TIMESTAMP, inventory_result

VALID = {"user_id": "user123", "item": "Burger", "quantity": 2}


def errors_of(payload) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        handlers.validate(payload)
    return caught.value.errors


# --- validate ---

def test_validate_returns_exactly_the_order_fields():
    assert handlers.validate(dict(VALID)) == VALID


@pytest.mark.parametrize("payload", [[], [VALID], "order", 42, None, True])
def test_validate_refuses_non_objects(payload):
    assert errors_of(payload) == {"body": "must be a JSON object"}


def test_validate_refuses_unknown_fields():
    assert errors_of({**VALID, "price": 3, "coupon": "x"}) == {
        "price": "is not a known field", "coupon": "is not a known field"}


def test_validate_reports_all_field_errors():
    errors = errors_of({"user_id": "", "item": "x" * 65, "quantity": 0, "extra": 1})
    assert errors == {"extra": "is not a known field",
                      "user_id": "must be a non-empty string",
                      "item": "must be at most 64 characters",
                      "quantity": "must be between 1 and 100"}


def test_validate_empty_object():
    assert set(errors_of({})) == {"user_id", "item", "quantity"}


def test_invalid_request_message_names_the_first_problem():
    error = InvalidRequest({"quantity": "must be an integer", "item": "is required"})
    assert str(error) == "quantity must be an integer"
    assert isinstance(error, ValueError)


# --- place ---

def test_place_makes_an_accepted_order_and_its_order_placed_message():
    order, message = handlers.place(VALID, TIMESTAMP)
    assert uuid.UUID(order.order_id).version == 4
    assert (order.user_id, order.item, order.quantity, order.status) == (
        "user123", "Burger", 2, "accepted")
    assert order.created_at == order.updated_at == TIMESTAMP
    assert order.reason is None
    assert (message.exchange, message.routing_key) == ("orders", "order.placed")
    assert message.type == "OrderPlaced"
    assert message.correlation_id == order.order_id
    body = json.loads(message.body)
    assert body == {"event_id": message.message_id, "event_type": "OrderPlaced",
                    "order_id": order.order_id, "timestamp": TIMESTAMP, "user_id": "user123",
                    "item": "Burger", "quantity": 2}
    assert uuid.UUID(body["event_id"]).version == 4
    assert body["event_id"] != order.order_id
    assert parse_order_placed(message.body).order_id == order.order_id


def test_place_gives_fresh_ids_each_time():
    ids = set()
    for _ in range(20):
        order, message = handlers.place(VALID, TIMESTAMP)
        ids.update((order.order_id, message.message_id))
    assert len(ids) == 40


def test_accepted_body_is_the_spec_shape():
    order, _ = handlers.place(VALID, TIMESTAMP)
    assert handlers.accepted_body(order.order_id, order.created_at) == {
        "order_id": order.order_id, "status": "accepted",
        "message": "Order received and being processed", "timestamp": TIMESTAMP}


def test_view_shows_reason_only_when_set():
    order, _ = handlers.place(VALID, TIMESTAMP)
    assert "reason" not in order.view()
    assert set(order.view()) == {"order_id", "user_id", "item", "quantity", "status",
                                 "created_at", "updated_at"}
    failed = handlers.Order(**{**order.__dict__, "status": "failed", "reason": "no stock"})
    assert failed.view()["reason"] == "no stock"


# --- final_status ---

def test_final_status_reserved():
    assert handlers.final_status(inventory_result(event_type=INVENTORY_RESERVED)) == (
        "reserved", None)


def test_final_status_failed_keeps_the_reason():
    result = inventory_result(event_type=INVENTORY_FAILED, reason="unknown item: Caviar")
    assert handlers.final_status(result) == ("failed", "unknown item: Caviar")


def test_final_status_failed_without_a_reason_gets_one():
    status, reason = handlers.final_status(inventory_result(event_type=INVENTORY_FAILED))
    assert (status, reason) == ("failed", "inventory could not be reserved")


# --- list_query ---

def query_error(args) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        handlers.list_query(args)
    return caught.value.errors


def test_list_query_defaults():
    assert handlers.list_query({}) == ListQuery(status=None, user_id=None, limit=50, offset=0)


def test_list_query_reads_everything():
    assert handlers.list_query({"status": "failed", "user_id": "u1", "limit": "500",
                              "offset": "20"}) == ListQuery("failed", "u1", 500, 20)


def test_list_query_empty_user_id_means_no_filter():
    assert handlers.list_query({"user_id": ""}).user_id is None


@pytest.mark.parametrize("status", ["accepted", "reserved", "failed"])
def test_list_query_accepts_each_status(status):
    assert handlers.list_query({"status": status}).status == status


@pytest.mark.parametrize("status", ["ACCEPTED", "done", ""])
def test_list_query_refuses_other_statuses(status):
    assert query_error({"status": status}) == {"status": "must be one of accepted, reserved, failed"}


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc", "1.5", "", " 5"])
def test_list_query_bad_limit(limit):
    assert set(query_error({"limit": limit})) == {"limit"}


@pytest.mark.parametrize("offset", ["-1", "x", "1e3", "10001", str(10**9)])
def test_list_query_bad_offset(offset):
    assert set(query_error({"offset": offset})) == {"offset"}


def test_list_query_limit_edges():
    assert handlers.list_query({"limit": "1"}).limit == 1
    assert handlers.list_query({"limit": "500"}).limit == 500
    assert handlers.list_query({"offset": "0"}).offset == 0
    assert handlers.list_query({"offset": "10000"}).offset == 10_000
    assert handlers.list_query({"before": "1"}).before == 1
    assert handlers.list_query({"before": str(2**63 - 1)}).before == 2**63 - 1
    assert handlers.list_query({}).before is None


@pytest.mark.parametrize("before", ["0", "-1", "x", "", str(2**63), "²"])
def test_list_query_bad_cursor(before):
    assert set(query_error({"before": before})) == {"before"}


def test_list_query_refuses_unknown_parameters():
    assert query_error({"sort": "asc"}) == {"sort": "is not a known query parameter"}


@pytest.mark.parametrize("name", ["limit", "offset"])
def test_list_query_superscript_digit_is_a_bad_request(name):
    assert set(query_error({name: "²"})) == {name}
