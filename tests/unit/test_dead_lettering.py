"""dead_letter(): the original message to `dlx` with its story, confirmed; False when refused."""
from __future__ import annotations

import hashlib
import logging

import pika
import pytest

from messaging import topology
from messaging.amqp import dead_lettering
from messaging.amqp.dead_lettering import dead_letter, story_headers
from messaging.amqp.delivery import Delivery, Rejection, delivery_key, parse_all
from messaging.events import Poison
from tests.unit.fake_pika import FakeBlockingChannel, FakeBlockingConnection, FakeClock, nacked, unroutable


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock(1_700_000_000.75)
    monkeypatch.setattr(dead_lettering, "time", fake)
    return fake


def rejection(headers: dict | None = None, error: str = "bad body", message_id: str | None = "m1",
              **properties) -> Rejection:
    delivery = Delivery(9, "inventory", "inventory.reserved", False,
                        pika.BasicProperties(message_id=message_id, headers=headers, **properties), b"{x")
    return Rejection(delivery, "invalid-json", error, attempts=4)


def channel() -> FakeBlockingChannel:
    return FakeBlockingChannel(FakeBlockingConnection())


def test_story_headers_keep_the_original_ones_and_tell_where_and_why():
    headers = story_headers(rejection({"trace": "t", "x-dlq-reason": "old"}), topology.ORDER_STATUS, "svc")
    assert headers == {
        "trace": "t", "x-dlq-reason": "invalid-json", "x-dlq-error": "bad body", "x-dlq-attempts": 4,
        "x-dlq-service": "svc", "x-dlq-queue": "order-status", "x-dlq-at": 1_700_000_000,
        "x-original-exchange": "inventory", "x-original-routing-key": "inventory.reserved"}


def test_story_headers_do_not_change_the_delivery():
    original = {"trace": "t"}
    story_headers(rejection(original), topology.ORDER_STATUS, "svc")
    assert original == {"trace": "t"}


def test_a_long_error_is_cut_to_its_first_thousand_characters():
    headers = story_headers(rejection(error="e" * 999 + "fg"), topology.ORDER_STATUS, "svc")
    assert headers["x-dlq-error"] == "e" * 999 + "f"


def test_dead_letter_publishes_the_original_body_and_properties_to_dlx(caplog):
    publisher = channel()
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.dead_lettering"):
        assert dead_letter(publisher, topology.ORDER_STATUS,
                           rejection(correlation_id="c", type="InventoryReserved", timestamp=3,
                                     content_type="application/json", content_encoding="utf-8"),
                           "svc") is True
    [letter] = publisher.published
    assert (letter.exchange, letter.routing_key, letter.body, letter.mandatory) == \
        ("dlx", "order-status-dlq", b"{x", True)
    props = letter.properties
    assert (props.message_id, props.correlation_id, props.type, props.timestamp, props.delivery_mode,
            props.content_type, props.content_encoding) == \
        ("m1", "c", "InventoryReserved", 3, 2, "application/json", "utf-8")
    assert props.headers["x-dlq-queue"] == "order-status"
    assert [r.getMessage() for r in caplog.records] == \
        ["svc: dead-lettering message m1 from order-status: invalid-json (bad body)"]


@pytest.mark.parametrize("refusal", [nacked, unroutable])
def test_a_refused_dead_letter_returns_false(refusal, caplog):
    publisher = channel()
    publisher.refuse_next(refusal())
    assert dead_letter(publisher, topology.ORDER_STATUS, rejection(message_id=None), "svc") is False
    assert [r.getMessage() for r in caplog.records] == [
        "svc: dead-lettering message tag 9 from order-status: invalid-json (bad body)",
        f"svc: the broker refused dead letter tag 9 for order-status-dlq ({refusal().__class__.__name__})"]


def test_other_publish_errors_are_not_swallowed():
    publisher = channel()
    publisher.refuse_next(pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        dead_letter(publisher, topology.ORDER_STATUS, rejection(), "svc")


def test_delivery_key_is_the_message_id_else_the_body_hash():
    assert delivery_key(rejection().delivery) == "id:m1"
    assert delivery_key(rejection(message_id="").delivery) == "sha256:" + hashlib.sha256(b"{x").hexdigest()


def test_parse_all_parses_the_good_and_rejects_the_poison_with_its_reason():
    def parse(body: bytes) -> str:
        if body == b"bad":
            raise Poison("schema-violation", "no order_id")
        return body.decode()
    good = Delivery(1, "e", "k", False, pika.BasicProperties(), b"ok")
    bad = Delivery(2, "e", "k", False, pika.BasicProperties(), b"bad")
    parsed, rejections = parse_all([good, bad, good], parse)
    assert parsed == ["ok", "ok"]
    assert rejections == [Rejection(bad, "schema-violation", "no order_id", 1)]
