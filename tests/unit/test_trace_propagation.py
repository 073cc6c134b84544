"""The trace context's way through one service: request or delivery, outbox row, AMQP header.

Also the migration that gives an existing outbox its traceparent column, on both backends.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from inventory_service.unit_of_work import InventoryUnitOfWork
from messaging.amqp.delivery import Delivery
from messaging.db import inbox, outbox
from messaging.db.messaging_store import MessagingStore, open_database
from messaging.db.migrations import migrate
from messaging.db.sqlite import Database
from messaging.events import encode
from messaging.observability import trace_context
from messaging.observability.logs import ScopeFilter
from messaging.observability.spans import Span
from order_service.app import create_app
from order_service.store import OrderStore
from tests.unit.factories import order_placed
from tests.unit.fake_pika import Script, deliver
from tests.unit.test_consume_loop import Handler, make_loop, rejecting, run
from tests.unit.test_inventory_unit_of_work import Wakes, published
from tests.unit.test_relay import add, make_relay, message, open_connection

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{SPAN}-01"
OLD_STEPS = [outbox.SCHEMA, inbox.SCHEMA, inbox.RETENTION_SCHEMA]  # version 3, before traces


@pytest.fixture
def relay_store(storage) -> Iterator[MessagingStore]:
    store = MessagingStore(Database(storage.path("relay.db"), storage))
    yield store
    store.close()


def pending_traceparents(store: MessagingStore) -> list[str | None]:
    outbox.release_all(store.conn)
    return [p.message.traceparent for p in outbox.claim(store.conn, "test", 100, -1.0)]


@pytest.mark.parametrize(("header", "continued"), [(PARENT, True), (None, False),
                                                   (f"ff-{TRACE}-{SPAN}-01", False)])
def test_an_order_is_stored_with_the_requests_trace(order_store, header, continued):
    client = create_app(store=order_store).test_client()
    headers = {"traceparent": header} if header else {}
    response = client.post("/order", json={"user_id": "u", "item": "Burger", "quantity": 1},
                           headers=headers)
    assert response.status_code == 202
    [stored] = pending_traceparents(order_store)
    context = trace_context.parse(stored)
    assert context is not None and context.span_id != SPAN
    assert (context.trace_id == TRACE) is continued
    assert trace_context.current() == trace_context.Scope(), "the request's scope is left"


def test_the_relay_publishes_the_stored_traceparent_as_a_header(relay_store):
    relay_store.write(lambda conn: outbox.add_many(conn, [
        message(0), replace(message(1), traceparent=PARENT)]))
    connection = open_connection(make_relay(relay_store))
    first, second = connection.channel_.published
    assert first.properties.headers is None, "no context stored: no header"
    assert second.properties.headers == {"traceparent": PARENT}


def test_each_delivery_is_handled_in_a_child_of_the_trace_its_header_names(monkeypatch):
    seen: list[Delivery] = []
    loop = make_loop(Handler(lambda batch: seen.extend(batch) or []))
    run(loop, monkeypatch, Script([
        deliver(1, headers={"traceparent": PARENT}), deliver(2), deliver(3, headers={"x": 1})]))
    first, second, third = (d.span.context for d in seen)
    assert first.trace_id == TRACE and first.span_id != SPAN
    assert len({first.trace_id, second.trace_id, third.trace_id}) == 3, "no header: a new trace"


def test_an_inventory_result_continues_the_trace_of_the_order_it_answers(inventory_store):
    unit_of_work = InventoryUnitOfWork(inventory_store, 1.0, Wakes())
    event = order_placed()
    _, properties, body = deliver(1, encode(event), message_id=event.event_id,
                                  headers={"traceparent": PARENT})
    span = trace_context.continue_or_start(PARENT)
    unit_of_work.handle_batch([Delivery(1, "orders", "order.placed", False, properties, body,
                                    Span(span))])
    [result] = published(inventory_store)
    assert result.traceparent == span.header(), "the parent is the consumer's span"


def test_an_outbox_from_version_3_gains_the_traceparent_column_once(store_settings):
    settings = store_settings("orders.db")
    db = open_database(settings, OrderStore.FILENAME)
    migrate(db, "messaging", OLD_STEPS)
    db.write(lambda conn: conn.execute(
        "INSERT INTO outbox (message_id, exchange, routing_key, body, correlation_id, type,"
        " created_at) VALUES ('old', 'orders', 'order.placed', ?, 'o', 'OrderPlaced', 1.0)",
        (b"{}",)))
    db.close()
    for _ in range(2):  # the second start finds version 4 and changes nothing
        store = OrderStore.open(settings)
        versions = dict(store.conn.execute("SELECT component, version FROM schema_version"))
        assert versions["messaging"] == 4
        store.close()
    store = OrderStore.open(settings)
    add(store, 1)
    store.write(lambda conn: outbox.add_many(conn, [replace(message(7), traceparent=PARENT)]))
    assert pending_traceparents(store) == [None, None, PARENT], "the old row survives, untraced"
    store.close()


def test_dead_lettering_is_logged_in_the_messages_trace(monkeypatch, caplog):
    caplog.handler.addFilter(ScopeFilter())
    loop = make_loop(rejecting(1))
    run(loop, monkeypatch, Script([deliver(1, message_id="poison", headers={"traceparent": PARENT})]))
    [record] = [r for r in caplog.records if r.name == "messaging.amqp.dead_lettering"]
    assert (record.trace_id, record.event_id) == (TRACE, "poison")
