"""Event contracts: field validation, strict parsing into Poison with a reason, and the envelope."""
from __future__ import annotations

import json
import uuid

import pytest

from messaging import events
from messaging.events import (
    INVENTORY_FAILED,
    INVENTORY_RESERVED,
    ORDER_PLACED,
    Poison,
    order_field_errors,
    parse_inventory_result,
    parse_order_placed,
)
from tests.unit.factories import inventory_result, order_placed, payload_of, to_body

VALID = {"user_id": "user123", "item": "Burger", "quantity": 2}


def with_(**changes):
    payload = dict(VALID)
    payload.update(changes)
    return payload


def without(field):
    return {key: value for key, value in VALID.items() if key != field}


# --- order_field_errors ---

def test_valid_fields_have_no_errors():
    assert order_field_errors(VALID) == {}


@pytest.mark.parametrize("field", ["user_id", "item", "quantity"])
def test_missing_field_is_required(field):
    assert order_field_errors(without(field)) == {field: "is required"}


def test_all_missing_fields_are_reported_together():
    assert order_field_errors({}) == {"user_id": "is required", "item": "is required",
                                      "quantity": "is required"}


@pytest.mark.parametrize("field", ["user_id", "item"])
@pytest.mark.parametrize("value", ["", "   ", "\t\n", None, 5, ["Burger"], {"a": 1}, True])
def test_text_field_must_be_a_non_empty_string(field, value):
    assert order_field_errors(with_(**{field: value})) == {field: "must be a non-empty string"}


@pytest.mark.parametrize("field", ["user_id", "item"])
def test_text_field_of_64_characters_is_accepted(field):
    assert order_field_errors(with_(**{field: "x" * 64})) == {}


@pytest.mark.parametrize("field", ["user_id", "item"])
def test_text_field_longer_than_64_characters_is_rejected(field):
    assert order_field_errors(with_(**{field: "x" * 65})) == {
        field: "must be at most 64 characters"}


@pytest.mark.parametrize("field", ["user_id", "item"])
@pytest.mark.parametrize("value", ["\x00", "Bur\x00ger", "\ud800"])
def test_text_no_store_can_hold_is_rejected(field, value):
    assert order_field_errors(with_(**{field: value})) == {
        field: "must be valid Unicode text without NUL characters"}


@pytest.mark.parametrize("field", ["user_id", "item"])
@pytest.mark.parametrize(("value", "found"), [
    ("user\nINFO forged line", "U+000A"), ("a\rb", "U+000D"), ("a\tb", "U+0009"),
    ("\x1b[2Jx", "U+001B"), ("a\x7fb", "U+007F"), ("a\x85b", "U+0085"),  # controls (Cc)
    ("evil\u202egnp.exe", "U+202E"), ("a\u2066b", "U+2066"), ("a\u200bb", "U+200B"),
    ("\ufeffBurger", "U+FEFF"), ("a\u00adb", "U+00AD"), ("a\U000e0041b", "U+E0041"),  # format (Cf)
    ("a\u2028b", "U+2028"), ("a\u2029b", "U+2029"),  # line and paragraph separators
])
def test_control_and_format_characters_are_refused_naming_the_first(field, value, found):
    assert order_field_errors(with_(**{field: value})) == {
        field: f"must not contain control or format characters (found {found})"}


@pytest.mark.parametrize("value", [
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # ZWNJ in Persian
    "\U0001f469\u200d\U0001f373", "caf\u00e9", "\u00a0Jos\u00e9", "\u5bff\u53f8"])
def test_names_that_need_joiners_or_are_not_ascii_are_accepted(value):
    assert order_field_errors(with_(user_id=value, item=value)) == {}


def test_the_event_parser_refuses_the_same_characters():
    body = events.encode(order_placed(item="Burger\nInventory reserved: order_id=forged"))
    with pytest.raises(Poison, match="U\\+000A") as refused:
        parse_order_placed(body)
    assert refused.value.reason == "invalid-field"


@pytest.mark.parametrize("quantity", [True, False, 2.0, 2.5, "2", None, [2]])
def test_quantity_must_be_an_integer(quantity):
    assert order_field_errors(with_(quantity=quantity)) == {"quantity": "must be an integer"}


@pytest.mark.parametrize("quantity", [0, 101, -1, -100, 10**9])
def test_quantity_out_of_range(quantity):
    assert order_field_errors(with_(quantity=quantity)) == {
        "quantity": "must be between 1 and 100"}


@pytest.mark.parametrize("quantity", [1, 100])
def test_quantity_edge_values_are_valid(quantity):
    assert order_field_errors(with_(quantity=quantity)) == {}


# --- parse_order_placed / parse_inventory_result: Poison reasons ---

PARSERS = [
    pytest.param(parse_order_placed, lambda: payload_of(order_placed()), id="OrderPlaced"),
    pytest.param(parse_inventory_result, lambda: payload_of(inventory_result()),
                 id="InventoryResult"),
]


def poison_reason(parse, body: bytes) -> str:
    with pytest.raises(Poison) as caught:
        parse(body)
    assert str(caught.value), "a Poison must explain itself"
    return caught.value.reason


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("body", [b"not json", b"{", b"", b"\x00\x01", b"{'single': 'quotes'}"])
def test_non_json_is_malformed(parse, valid, body):
    assert poison_reason(parse, body) == "malformed-json"


@pytest.mark.parametrize("parse, valid", PARSERS)
def test_invalid_utf8_is_malformed(parse, valid):
    body = b'{"user_id": "\xff\xfe\xfa"}'
    assert poison_reason(parse, body) == "malformed-json"


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("body", [b"[]", b"[1, 2]", b'"OrderPlaced"', b"42", b"1.5", b"null",
                                  b"true"])
def test_json_that_is_not_an_object(parse, valid, body):
    assert poison_reason(parse, body) == "not-an-object"


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("field", ["event_id", "order_id", "timestamp", "user_id", "item",
                                   "quantity"])
def test_missing_field_is_invalid(parse, valid, field):
    payload = valid()
    del payload[field]
    assert poison_reason(parse, to_body(payload)) == "invalid-field"


@pytest.mark.parametrize("parse, valid", PARSERS)
def test_missing_event_type_is_unknown(parse, valid):
    payload = valid()
    del payload["event_type"]
    assert poison_reason(parse, to_body(payload)) == "unknown-event-type"


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("field, value", [
    ("event_id", 12345), ("order_id", None), ("timestamp", 1700000000), ("user_id", 7),
    ("item", ["Burger"]), ("quantity", "2"), ("quantity", 2.5), ("quantity", True),
    ("user_id", ""), ("item", "x" * 65),
])
def test_wrong_type_is_invalid(parse, valid, field, value):
    payload = valid()
    payload[field] = value
    assert poison_reason(parse, to_body(payload)) == "invalid-field"


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("field", ["event_id", "order_id"])
@pytest.mark.parametrize("value", ["not-a-uuid", "", "1234", str(uuid.uuid4())[:-1] + "g"])
def test_bad_uuid_is_invalid(parse, valid, field, value):
    payload = valid()
    payload[field] = value
    with pytest.raises(Poison) as caught:
        parse(to_body(payload))
    assert caught.value.reason == "invalid-field"
    assert field in str(caught.value)


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("value", ["yesterday", "", "2026-13-01T00:00:00Z", "2026-02-30"])
def test_bad_timestamp_is_invalid(parse, valid, value):
    payload = valid()
    payload["timestamp"] = value
    with pytest.raises(Poison) as caught:
        parse(to_body(payload))
    assert caught.value.reason == "invalid-field"
    assert "timestamp" in str(caught.value)


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("event_type", ["Bogus", "", None, 1, "orderplaced"])
def test_unknown_event_type(parse, valid, event_type):
    payload = valid()
    payload["event_type"] = event_type
    assert poison_reason(parse, to_body(payload)) == "unknown-event-type"


@pytest.mark.parametrize("event_type", [INVENTORY_RESERVED, INVENTORY_FAILED])
def test_order_placed_parser_refuses_inventory_event_types(event_type):
    payload = payload_of(order_placed())
    payload["event_type"] = event_type
    assert poison_reason(parse_order_placed, to_body(payload)) == "unknown-event-type"


def test_inventory_parser_refuses_order_placed():
    payload = payload_of(inventory_result())
    payload["event_type"] = ORDER_PLACED
    assert poison_reason(parse_inventory_result, to_body(payload)) == "unknown-event-type"


@pytest.mark.parametrize("parse, valid", PARSERS)
@pytest.mark.parametrize("quantity", [0, 101, -5])
def test_out_of_range_quantity_is_invalid(parse, valid, quantity):
    payload = valid()
    payload["quantity"] = quantity
    with pytest.raises(Poison) as caught:
        parse(to_body(payload))
    assert caught.value.reason == "invalid-field"
    assert "quantity" in str(caught.value)


def test_inventory_reason_must_be_a_string():
    payload = payload_of(inventory_result(event_type=INVENTORY_FAILED, reason="x"))
    payload["reason"] = 42
    assert poison_reason(parse_inventory_result, to_body(payload)) == "invalid-field"


def test_poison_is_a_value_error_with_a_reason():
    poison = Poison("malformed-json", "body is not JSON")
    assert isinstance(poison, ValueError)
    assert poison.reason == "malformed-json"
    assert str(poison) == "body is not JSON"


def test_text_that_cannot_be_utf8_encoded_is_poison():
    body = events.encode(order_placed()).replace(b'"user123"', b'"\\ud800"')
    assert json.loads(body)["user_id"] == "\ud800"
    assert poison_reason(parse_order_placed, body) == "invalid-field"


@pytest.mark.parametrize("parse, valid", PARSERS)
def test_deeply_nested_json_is_poison(parse, valid):
    assert poison_reason(parse, b"[" * 2000 + b"]" * 2000) == "malformed-json"


# --- round trip and envelope ---

def test_order_placed_round_trip():
    event = order_placed(quantity=100, item="x" * 64)
    assert parse_order_placed(events.encode(event)) == event


@pytest.mark.parametrize("event_type, reason", [(INVENTORY_RESERVED, None),
                                                (INVENTORY_FAILED, "insufficient stock")])
def test_inventory_result_round_trip(event_type, reason):
    event = inventory_result(event_type=event_type, reason=reason)
    assert parse_inventory_result(events.encode(event)) == event


def test_encode_omits_reason_when_none():
    payload = json.loads(events.encode(inventory_result(reason=None)))
    assert "reason" not in payload
    assert set(payload) == {"event_id", "event_type", "order_id", "timestamp", "user_id", "item",
                            "quantity"}


def test_encode_keeps_reason_when_set():
    payload = json.loads(events.encode(inventory_result(event_type=INVENTORY_FAILED,
                                                        reason="unknown item: Caviar")))
    assert payload["reason"] == "unknown item: Caviar"


def test_encoded_order_placed_has_exactly_the_spec_fields():
    event = order_placed()
    payload = json.loads(events.encode(event))
    assert payload == {"event_id": event.event_id, "event_type": "OrderPlaced",
                       "order_id": event.order_id, "timestamp": event.timestamp,
                       "user_id": "user123", "item": "Burger", "quantity": 2}


def test_parsing_normalises_uuids():
    event = order_placed()
    payload = payload_of(event)
    payload["event_id"] = event.event_id.upper()
    assert parse_order_placed(to_body(payload)).event_id == event.event_id


def test_long_reason_is_truncated_to_200_characters():
    payload = payload_of(inventory_result(event_type=INVENTORY_FAILED, reason="r"))
    payload["reason"] = "r" * 500
    assert parse_inventory_result(to_body(payload)).reason == "r" * 200


def test_reserved_property():
    assert inventory_result(event_type=INVENTORY_RESERVED).reserved is True
    assert inventory_result(event_type=INVENTORY_FAILED).reserved is False


@pytest.mark.parametrize("event", [order_placed(), inventory_result()], ids=["order", "result"])
def test_message_for_sets_identity_from_the_event(event):
    message = events.message_for(event, "some-exchange", "some.key")
    assert message.exchange == "some-exchange"
    assert message.routing_key == "some.key"
    assert message.message_id == event.event_id
    assert message.correlation_id == event.order_id
    assert message.type == event.event_type
    assert message.body == events.encode(event)


def test_utc_now_is_parseable_iso_utc():
    now = events.utc_now()
    assert now.endswith("Z")
    payload = payload_of(order_placed())
    payload["timestamp"] = now
    assert parse_order_placed(to_body(payload)).timestamp == now
