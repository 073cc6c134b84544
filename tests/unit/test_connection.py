"""connect(): retried with a growing, capped backoff until stopped, declaring the topology each time;
close_quietly(); Backoff. pika.BlockingConnection is replaced by a fake: no broker."""
from __future__ import annotations

import logging

import pika
import pika.exceptions
import pytest

from messaging import topology
from messaging.amqp import connection
from messaging.amqp.connection import Backoff, close_quietly, connect
from messaging.settings import BrokerSettings
from tests.unit.fake_pika import FakeEvent


class DeclaringChannel:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.closed = False

    def exchange_declare(self, **kwargs) -> None:
        self.calls.append(("exchange", kwargs))

    def queue_declare(self, **kwargs) -> None:
        self.calls.append(("queue", kwargs))

    def queue_bind(self, **kwargs) -> None:
        self.calls.append(("bind", kwargs))

    def close(self) -> None:
        self.closed = True


class Blocking:
    def __init__(self, parameters) -> None:
        self.parameters = parameters
        self.channels: list[DeclaringChannel] = []
        self.is_open = True

    def channel(self) -> DeclaringChannel:
        self.channels.append(DeclaringChannel())
        return self.channels[-1]


@pytest.fixture
def brokers(monkeypatch):
    """Make pika.BlockingConnection fail with each error of `outcomes` in turn, then connect."""
    outcomes: list[BaseException] = []
    made: list[Blocking] = []

    def factory(parameters):
        if outcomes:
            raise outcomes.pop(0)
        made.append(Blocking(parameters))
        return made[-1]
    monkeypatch.setattr(connection.pika, "BlockingConnection", factory)
    return outcomes, made


def test_connect_declares_the_whole_topology_and_closes_its_channel(brokers, caplog):
    _, made = brokers
    settings = BrokerSettings(host="rabbit", port=5673, vhost="v1")
    with caplog.at_level(logging.INFO, logger="messaging.amqp.connection"):
        result = connect(settings, FakeEvent(), "svc")
    assert result is made[0]
    assert isinstance(result.parameters, pika.ConnectionParameters)
    assert (result.parameters.host, result.parameters.port) == ("rabbit", 5673)
    [channel] = result.channels
    assert channel.closed
    exchanges = [kw for kind, kw in channel.calls if kind == "exchange"]
    assert exchanges == [{"exchange": name, "exchange_type": "topic", "durable": True}
                         for name in ("orders", "inventory", "dlx")]
    queues = [kw for kind, kw in channel.calls if kind == "queue"]
    assert queues == [{"queue": q.name, "durable": True, "arguments": q.arguments()}
                      for q in topology.QUEUES]
    binds = [kw for kind, kw in channel.calls if kind == "bind"]
    assert {"queue": "order-status", "exchange": "inventory", "routing_key": "inventory.failed"} in binds
    assert len(binds) == sum(len(q.bindings) for q in topology.QUEUES)
    assert channel.calls[-1][0] == "bind", "each queue is bound after it is declared"
    assert [r.getMessage() for r in caplog.records] == ["svc connected to RabbitMQ at rabbit:5673 vhost v1"]


def test_connect_retries_with_growing_delays(brokers, caplog):
    outcomes, made = brokers
    outcomes += [pika.exceptions.AMQPConnectionError("refused"), ConnectionRefusedError(),
                 pika.exceptions.StreamLostError("eof")]
    stopping = FakeEvent()
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.connection"):
        assert connect(BrokerSettings(), stopping, "svc") is made[0]
    first, second, third = stopping.waits
    assert 0.08 <= first <= 0.1 and 0.16 <= second <= 0.2 and 0.32 <= third <= 0.4
    assert [r.getMessage().rsplit(" ", 1)[0] for r in caplog.records] == [
        "svc cannot reach RabbitMQ (AMQPConnectionError); retrying in",
        "svc cannot reach RabbitMQ (ConnectionRefusedError); retrying in",
        "svc cannot reach RabbitMQ (StreamLostError); retrying in",
    ]
    assert caplog.records[0].getMessage().endswith(f"retrying in {first:.1f}s")


def test_connect_gives_up_when_stopped(brokers):
    outcomes, made = brokers
    outcomes += [pika.exceptions.AMQPConnectionError("refused")] * 3
    stopping = FakeEvent()
    stopping.on_wait = lambda timeout: stopping.set()
    assert connect(BrokerSettings(), stopping, "svc") is None
    assert len(stopping.waits) == 1 and made == []


def test_connect_does_not_hide_other_errors(brokers):
    outcomes, _ = brokers
    outcomes.append(ValueError("bad parameters"))
    with pytest.raises(ValueError):
        connect(BrokerSettings(), FakeEvent(), "svc")


def test_backoff_doubles_from_a_tenth_of_a_second_up_to_five_with_jitter(monkeypatch):
    jitter: list[tuple[float, float]] = []
    monkeypatch.setattr(connection.random, "uniform", lambda low, high: jitter.append((low, high)) or 1.0)
    backoff = Backoff()
    assert [round(backoff.next_delay(), 3) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert set(jitter) == {(0.8, 1.0)}
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)
    monkeypatch.setattr(connection.random, "uniform", lambda low, high: low)
    assert Backoff().next_delay() == pytest.approx(0.08)


class Closing:
    def __init__(self, is_open: bool = True, error: Exception | None = None) -> None:
        self.is_open, self.error, self.closed = is_open, error, 0

    def close(self) -> None:
        self.closed += 1
        if self.error:
            raise self.error


def test_close_quietly_closes_an_open_connection():
    conn = Closing()
    close_quietly(conn)
    assert conn.closed == 1


def test_close_quietly_leaves_a_closed_one_and_none_alone():
    conn = Closing(is_open=False)
    close_quietly(conn)
    close_quietly(None)
    assert conn.closed == 0


def test_close_quietly_swallows_and_logs_an_error_while_closing(caplog):
    with caplog.at_level(logging.DEBUG, logger="messaging.amqp.connection"):
        close_quietly(Closing(error=pika.exceptions.StreamLostError("eof")))
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "ignoring error while closing a connection"
    assert record.exc_info and record.exc_info[0] is pika.exceptions.StreamLostError


def test_with_rabbitmq_topology_own_a_service_declares_only_its_part(brokers):
    _, made = brokers
    connection.open_declared(BrokerSettings(part="notification"))
    calls = made[0].channels[0].calls
    assert [c["exchange"] for kind, c in calls if kind == "exchange"] == ["inventory", "dlx"]
    assert [c["queue"] for kind, c in calls if kind == "queue"] == ["inventory-events",
                                                                   "inventory-events-dlq"]
    connection.open_declared(BrokerSettings())
    assert len([c for kind, c in made[1].channels[0].calls if kind == "queue"]) == 6, "the whole"
