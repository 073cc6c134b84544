"""What the consume loop counts, over fake pika: each delivery acked once, retries, dead letters,
refused dead letters, and its connection going up and down."""
from __future__ import annotations

from collections.abc import Iterator

import pika.exceptions
import pytest
from prometheus_client import CollectorRegistry

from messaging.observability import exposition, metrics
from stack.metrics import Samples
from tests.unit.fake_pika import IDLE, Script, deliver, nacked, unroutable
from tests.unit.test_consume_loop import (
    failing_on,
    locked,
    make_loop,
    refusing_connection,
    rejecting,
    run,
)

QUEUE = "order-events"


@pytest.fixture(autouse=True)
def on() -> Iterator[None]:
    metrics.configure(True, registry=CollectorRegistry())
    yield
    metrics.configure(False)


def scrape() -> Samples:
    return Samples(exposition.text()[0].decode())


def test_a_dead_lettered_delivery_is_consumed_once(monkeypatch):
    run(make_loop(rejecting(2)), monkeypatch, Script([deliver(1), deliver(2), deliver(3)]))
    s = scrape()
    assert s.value("messages_consumed_total", queue=QUEUE) == 3
    assert s.value("message_handling_seconds_count", queue=QUEUE) == 3
    assert s.labelled("messages_dead_lettered_total", "reason") == {"invalid-json": 1}
    assert s.value("message_handling_retries_total", queue=QUEUE) == 0


def test_each_transient_retry_is_counted(monkeypatch):
    run(make_loop(failing_on(1, locked, times=2)), monkeypatch, Script([deliver(1), deliver(2)]))
    s = scrape()
    assert s.value("message_handling_retries_total", queue=QUEUE) == 2
    assert s.value("messages_consumed_total", queue=QUEUE) == 2


@pytest.mark.parametrize(("refusal", "reason"), [(nacked, "nacked"), (unroutable, "unroutable")])
def test_a_refused_dead_letter_is_counted_and_its_delivery_not_consumed(monkeypatch, refusal, reason):
    connection = refusing_connection(Script([deliver(1), deliver(2), deliver(3)]), refusal())
    run(make_loop(rejecting(2)), monkeypatch, connection)
    s = scrape()
    assert s.labelled("dead_letters_refused_total", "reason") == {reason: 1}
    assert s.value("messages_dead_lettered_total") == 0
    assert s.value("messages_consumed_total", queue=QUEUE) == 2, "put back, not consumed"


def test_the_connection_is_up_while_consuming_and_a_second_connect_is_a_reconnect(monkeypatch):
    seen: list[float] = []
    loop = make_loop(rejecting())
    loop._handle = lambda batch: seen.append(scrape().value("broker_connected")) or []
    lost = pika.exceptions.StreamLostError("Transport indicated EOF")
    run(loop, monkeypatch, Script([deliver(1), IDLE, lost]), Script([deliver(2)]))
    assert seen == [1, 1]
    s = scrape()
    assert (s.value("broker_connected"), s.value("broker_reconnects_total")) == (0, 1)
