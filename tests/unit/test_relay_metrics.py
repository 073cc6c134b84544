"""What the relay counts, over a fake SelectConnection: confirms by exchange, nacks and returns, and
its connection going up and down."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from messaging.observability import exposition, metrics
from stack.metrics import Samples
from tests.unit.fake_pika import FakeEvent, FakeSelectConnection
from tests.unit.test_relay import add, clock, make_relay, open_connection, run_relay, store  # noqa: F401


@pytest.fixture(autouse=True)
def on() -> Iterator[None]:
    metrics.configure(True, outbox=True, registry=CollectorRegistry())
    yield
    metrics.configure(False)


def scrape() -> Samples:
    return Samples(exposition.text()[0].decode())


def test_confirms_nacks_and_returns_are_counted(store, clock):  # noqa: F811
    add(store, 4)
    r = make_relay(store)
    channel = open_connection(r).channel_
    assert scrape().value("broker_connected") == 1
    channel.return_(2)  # m1 unroutable, its ack follows
    channel.ack(2, multiple=True)
    channel.nack(3)
    channel.ack(4)
    s = scrape()
    assert s.labelled("messages_published_total", "exchange") == {"orders": 2}
    assert s.value("publish_confirm_seconds_count") == 2
    assert s.labelled("messages_publish_refused_total", "reason") == {"unroutable": 1, "nacked": 1}


def test_a_lost_connection_is_down_and_the_next_one_a_reconnect(store, clock, monkeypatch):  # noqa: F811
    r = make_relay(store)
    r._stopping = FakeEvent()
    seen: list[float] = []

    def connect(connection: FakeSelectConnection) -> None:
        connection.open()
        connection.channel_.confirm_ok()
        seen.append(scrape().value("broker_connected"))
        connection.drop()

    run_relay(r, monkeypatch, [connect, connect])
    assert seen == [1, 1]
    s = scrape()
    assert (s.value("broker_connected"), s.value("broker_reconnects_total")) == (0, 1)
