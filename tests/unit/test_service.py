"""The shared start-up and lifecycle, with fake parts: start order, stop in reverse with its
timeouts, a refusal of our queues on the main thread and in a gunicorn worker, /health, and the
exit statuses of `main`."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from messaging import service, topology
from messaging.service import Lifecycle
from messaging.settings import ConfigError, ServiceSettings
from messaging.topology import QueueMismatch

REFUSAL = QueueMismatch("order-events", "quorum", "PRECONDITION_FAILED - inequivalent arg "
                        "'x-queue-type' for queue 'order-events' in vhost 'v': received 'quorum' "
                        "but current is 'classic'")


class Store:
    RETAINED = (("inbox", "event_id", "processed_at"),)
    windows: dict[str, float] = {}

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def start_checkpoints(self) -> None:
        self.calls.append("checkpoints started")

    def stop_checkpoints(self) -> None:
        self.calls.append("checkpoints stopped")

    def is_transient(self, exc: BaseException) -> bool:
        return False

    def count_redelivery(self, key: str) -> int:
        return 1

    def outbox_backlog(self) -> int:
        return 4


class Part:
    """A relay or pruner that records being started and stopped (with its timeout)."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls
        self.connected, self.pruned, self.on_refused = True, {"inbox": 2}, None

    def start(self) -> None:
        self.calls.append(f"{self.name} started")

    def stop(self, timeout: float = 5.0) -> None:
        self.calls.append(f"{self.name} stopped within {timeout}")


class Loop:
    """A consume loop that runs until stopped, or raises `refusal` at once."""

    def __init__(self, calls: list[str], refusal: QueueMismatch | None = None) -> None:
        self.calls, self.refusal = calls, refusal
        self.consuming, self.processed = True, 7
        self.stopped = threading.Event()

    def run(self) -> None:
        self.calls.append("consuming")
        if self.refusal is not None:
            raise self.refusal
        assert self.stopped.wait(10), "stopped within the test's time"
        self.calls.append("consumed the batch in hand")

    def stop(self) -> None:
        self.calls.append("loop stopped")
        self.stopped.set()


def lifecycle(calls: list[str], monkeypatch, relay: bool = True, refusal: QueueMismatch | None = None,
              in_thread: bool = False) -> Lifecycle:
    monkeypatch.setattr(service, "freeze_startup_objects", lambda: calls.append("frozen"))
    monkeypatch.setattr(service.spans, "shutdown", lambda: calls.append("spans exported"))
    made = Lifecycle("order-service", ServiceSettings(), Store(calls), topology.ORDER_STATUS,
                     lambda deliveries: [], Part("relay", calls) if relay else None,
                     loop_name="order-service-1-status", in_thread=in_thread)
    made.loop, made.pruner = Loop(calls, refusal), Part("pruner", calls)
    return made


def test_starts_in_order_consumes_on_the_callers_thread_and_stops_in_reverse(monkeypatch):
    calls: list[str] = []
    life = lifecycle(calls, monkeypatch)
    life.start()
    assert calls == ["checkpoints started", "pruner started", "relay started", "frozen"]
    threading.Timer(0.05, life.loop.stop).start()  # a signal, while consume() blocks
    life.consume()
    life.stop(timeout=5.0)
    assert calls[4:] == ["consuming", "loop stopped", "consumed the batch in hand", "loop stopped",
                         "relay stopped within 5.0", "pruner stopped within 5.0",
                         "checkpoints stopped", "spans exported"]


def test_in_a_worker_the_loop_runs_on_its_own_thread_and_stop_waits_for_it(monkeypatch):
    calls: list[str] = []
    life = lifecycle(calls, monkeypatch, in_thread=True)
    life.start()
    assert calls[:3] == ["checkpoints started", "pruner started", "relay started"]
    assert life._thread.name == "order-service-1-status"
    life.stop(timeout=8.0)
    assert not life._thread.is_alive()
    assert calls.index("loop stopped") < calls.index("relay stopped within 8.0")
    assert calls.index("consumed the batch in hand") < calls.index("pruner stopped within 5.0"), \
        "the loop's thread is joined before the pruner and checkpoints stop"
    assert calls[-3:] == ["pruner stopped within 5.0", "checkpoints stopped", "spans exported"]


def test_without_a_relay_nothing_publishes(monkeypatch):
    calls: list[str] = []
    life = lifecycle(calls, monkeypatch, relay=False)
    life.start()
    life.loop.stop()
    life.consume()
    life.stop(timeout=5.0)
    assert not [call for call in calls if call.startswith("relay")]


def test_a_refusal_met_by_the_loop_is_raised_once_consuming_ends(monkeypatch):
    life = lifecycle([], monkeypatch, refusal=REFUSAL)
    with pytest.raises(QueueMismatch):
        life.consume()
    assert life.refused is REFUSAL


def test_a_refusal_met_by_the_relay_stops_the_loop_and_is_raised(monkeypatch):
    calls: list[str] = []
    life = lifecycle(calls, monkeypatch)
    life.relay.on_refused(REFUSAL)  # what the relay calls from its own thread
    assert "loop stopped" in calls
    with pytest.raises(QueueMismatch):
        life.consume()


@pytest.mark.parametrize("met_by", ["relay", "loop"])
def test_a_refusal_in_a_worker_ends_the_process_with_3_and_one_line(monkeypatch, capsys, met_by):
    exits: list[int] = []
    monkeypatch.setattr(service.os, "_exit", exits.append)
    life = lifecycle([], monkeypatch, in_thread=True, refusal=REFUSAL if met_by == "loop" else None)
    if met_by == "relay":
        life.relay.on_refused(REFUSAL)
    else:
        life._consume_in_thread()
    assert exits == [service.TOPOLOGY_REFUSED] == [3]
    assert capsys.readouterr().err == f"order-service: {REFUSAL}\n"


@pytest.mark.parametrize("consuming, connected, status", [
    (True, True, 200), (False, True, 503), (True, False, 503)])
def test_health_with_a_relay(monkeypatch, consuming, connected, status):
    life = lifecycle([], monkeypatch)
    life.loop.consuming, life.relay.connected = consuming, connected
    assert life.health({"duplicates": 1}) == (status, {
        "status": "healthy" if status == 200 else "unhealthy", "service": "order-service",
        "consuming": consuming, "publisher_connected": connected, "outbox_backlog": 4,
        "processed": 7, "duplicates": 1, "pruned": {"inbox": 2}})


def test_health_without_a_relay_has_no_publisher_fields(monkeypatch):
    life = lifecycle([], monkeypatch, relay=False)
    assert life.health({"notifications_sent": 3}) == (200, {
        "status": "healthy", "service": "order-service", "consuming": True, "processed": 7,
        "notifications_sent": 3, "pruned": {"inbox": 2}})
    life.loop.consuming = False
    assert life.health({})[0] == 503


def settings() -> ServiceSettings:
    return ServiceSettings()


def test_main_exits_2_with_one_line_when_a_setting_is_bad(capsys):
    def bad() -> ServiceSettings:
        raise ConfigError("PORT must be an integer, got 'abc'")

    assert service.main("svc", bad, lambda s: pytest.fail("not built")) == 2
    assert capsys.readouterr().err == "svc: configuration error: PORT must be an integer, got 'abc'\n"


@pytest.mark.parametrize("error, status, line", [
    (ConfigError("DATABASE_URL names no database"), 2,
     "svc: configuration error: DATABASE_URL names no database\n"),
    (REFUSAL, 3, f"svc: {REFUSAL}\n")], ids=["bad-setting", "refused-queues"])
def test_main_exits_with_one_line_when_building_or_running_fails(monkeypatch, capsys, error, status,
                                                                 line):
    monkeypatch.setattr(service.logs, "configure", lambda name: None)

    def fail() -> int:
        raise error

    assert service.main("svc", settings, lambda s: SimpleNamespace(run=fail)) == status
    assert capsys.readouterr().err == line
    assert service.main("svc", settings, lambda s: SimpleNamespace(run=lambda: 0)) == 0
