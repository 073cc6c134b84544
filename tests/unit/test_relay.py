"""The outbox relay against a fake SelectConnection: confirms, nacks, returns, reconnects, the window,
hand-over, shutdown. The outbox is a real SQLite MessagingStore; the broker is the test."""
from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator

import pika
import pytest

from messaging import topology
from messaging.amqp import relay
from messaging.amqp.relay import Relay
from messaging.db import outbox
from messaging.db.messaging_store import MessagingStore
from messaging.db.outbox import PendingMessage
from messaging.db.sqlite import Database
from messaging.events import Message
from messaging.settings import BrokerSettings
from messaging.topology import QueueMismatch
from tests.unit.fake_pika import FakeClock, FakeEvent, FakeSelectConnection, Probe


def message(n: int) -> Message:
    return Message("orders", "order.placed", f'{{"n":{n}}}'.encode(), f"m{n}", f"o{n}", "OrderPlaced")


@pytest.fixture
def store(storage) -> Iterator[MessagingStore]:
    db = MessagingStore(Database(storage.path("relay.db"), storage))
    yield db
    db.close()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """One virtual clock for the outbox's leases and the relay's flush deadline."""
    fake = FakeClock()
    monkeypatch.setattr(outbox, "time", fake)
    monkeypatch.setattr(relay, "time", fake)
    return fake


def add(store: MessagingStore, count: int, start: int = 0,
        claimant: str | None = None) -> list[PendingMessage]:
    return store.write(lambda conn: outbox.add_many(conn, [message(n) for n in range(start, start + count)],
                                                    claimant))


def remaining(store: MessagingStore) -> dict[str, tuple[str | None, float | None]]:
    """message_id -> (claimed_by, claimed_until) of every row still in the outbox."""
    return {row[0]: (row[1], row[2]) for row in store.conn.execute(
        "SELECT message_id, claimed_by, claimed_until FROM outbox ORDER BY id")}


def make_relay(store: MessagingStore, **kwargs) -> Relay:
    r = Relay(BrokerSettings(), store, "test", **kwargs)
    r._stopped = FakeEvent()  # stop() returns at once instead of waiting for a thread
    return r


def logged(caplog) -> list[str]:
    """What the relay itself logged."""
    return [record.getMessage() for record in caplog.records if record.name == "messaging.amqp.relay"]


def open_connection(r: Relay, confirm: bool = True) -> FakeSelectConnection:
    """Connect `r` as run() would, up to confirm-select-ok (unless `confirm` is False)."""
    connection = FakeSelectConnection(None, r._on_open, r._on_open_error, r._on_closed)
    r._connection = connection
    connection.open()
    if confirm:
        connection.channel_.confirm_ok()
    return connection


def test_publishes_every_outbox_row_once_confirms_are_on(store, clock):
    add(store, 3)
    r = make_relay(store)
    connection = open_connection(r, confirm=False)
    channel = connection.channel_
    assert channel.published == [] and not r.connected and r.claimant() is None, \
        "nothing goes out before confirm-select-ok: the delivery tags start there"
    channel.confirm_ok()
    assert r.connected and r.claimant() == r.owner
    assert channel.message_ids == ["m0", "m1", "m2"]
    first = channel.published[0]
    assert (first.exchange, first.routing_key, first.body, first.mandatory) == \
        ("orders", "order.placed", b'{"n":0}', True)
    props = first.properties
    assert (props.content_type, props.delivery_mode, props.message_id, props.correlation_id,
            props.type, props.timestamp) == ("application/json", 2, "m0", "o0", "OrderPlaced",
                                             int(clock.now))
    assert set(remaining(store).values()) == {(r.owner, clock.now + outbox.CLAIM_LEASE)}
    assert connection.ioloop.delays == [0.5], "the periodic outbox tick"


def test_owner_is_the_host_the_process_and_the_service_name(store, monkeypatch):
    import os
    import socket
    r = make_relay(store)
    assert r.owner == f"{socket.gethostname()}:{os.getpid()}:test"
    assert r.name == "test-relay" and r.daemon
    monkeypatch.setattr(relay.os, "getpid", lambda: 4242)
    assert make_relay(store).owner != r.owner, "two replicas of a service on one host"


def test_a_single_ack_confirms_one_row_and_deletes_it_after_the_delay(store, clock):
    add(store, 3)
    r = make_relay(store)
    connection = open_connection(r)
    connection.channel_.ack(2)
    assert list(remaining(store)) == ["m0", "m1", "m2"], "confirmed rows wait to be deleted together"
    assert sorted(connection.ioloop.delays) == [relay.DELETE_DELAY, 0.5]
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert list(remaining(store)) == ["m0", "m2"]
    assert len(r._inflight) == 2


def test_a_multiple_ack_confirms_every_tag_up_to_it(store, clock):
    add(store, 5)
    r = make_relay(store)
    connection = open_connection(r)
    connection.channel_.ack(3, multiple=True)
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert list(remaining(store)) == ["m3", "m4"]
    connection.channel_.ack(5, multiple=True)
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert remaining(store) == {}


def test_confirms_are_deleted_together_in_one_transaction(store, clock, monkeypatch):
    add(store, 5)
    r = make_relay(store)
    connection = open_connection(r)
    deletes = deletes_counted(monkeypatch)
    for tag in (2, 4, 5):
        connection.channel_.ack(tag, multiple=True)
    assert deletes == [] and len(remaining(store)) == 5
    assert sorted(connection.ioloop.delays) == [relay.DELETE_DELAY, 0.5], "one timer for the lot"
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert deletes == [5] and remaining(store) == {}


def test_a_full_batch_of_confirms_is_deleted_without_waiting(store, clock, monkeypatch):
    monkeypatch.setattr(relay, "DELETE_BATCH", 3)
    add(store, 5)
    r = make_relay(store)
    connection = open_connection(r)
    deletes = deletes_counted(monkeypatch)
    connection.channel_.ack(2, multiple=True)
    assert deletes == []
    connection.channel_.ack(3)
    assert deletes == [3] and list(remaining(store)) == ["m3", "m4"]
    connection.ioloop.advance(relay.DELETE_DELAY)  # the timer set for the first confirm finds nothing
    assert deletes == [3]


def deletes_counted(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = outbox.delete

    def counting(conn, ids):
        calls.append(len(ids))
        real(conn, ids)
    monkeypatch.setattr(outbox, "delete", counting)
    return calls


def test_a_nacked_row_is_kept_and_published_again_after_the_retry_delay(store, clock):
    add(store, 3)
    r = make_relay(store)
    connection = open_connection(r)
    channel = connection.channel_
    channel.nack(2)
    assert remaining(store)["m1"] == (None, clock.now + relay.RETRY_DELAY)
    assert channel.message_ids == ["m0", "m1", "m2"], "not at once"
    clock.advance(relay.RETRY_DELAY / 2)
    connection.ioloop.advance(0.5)  # the tick
    assert channel.message_ids == ["m0", "m1", "m2"], "not before the delay"
    clock.advance(relay.RETRY_DELAY)
    connection.ioloop.advance(0.5)
    assert channel.message_ids == ["m0", "m1", "m2", "m1"]
    channel.ack(4)
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert list(remaining(store)) == ["m0", "m2"]


def test_acks_and_nacks_interleaved(store, clock):
    add(store, 7)
    r = make_relay(store)
    connection = open_connection(r)
    channel = connection.channel_
    channel.ack(2, multiple=True)  # m0 m1
    channel.nack(3)  # m2
    channel.ack(5, multiple=True)  # m3 m4
    channel.nack(7, multiple=True)  # m5 m6
    channel.ack(7, multiple=True)  # nothing left: a repeated tag settles nothing twice
    assert len(r._inflight) == 0
    connection.ioloop.advance(relay.DELETE_DELAY)
    rows = remaining(store)
    assert list(rows) == ["m2", "m5", "m6"]
    assert set(rows.values()) == {(None, clock.now + relay.RETRY_DELAY)}


def test_a_returned_message_is_kept_even_though_its_ack_follows(store, clock, caplog):
    add(store, 3)
    r = make_relay(store)
    connection = open_connection(r)
    channel = connection.channel_
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.relay"):
        channel.return_(2)  # basic.return comes before the ack of an unroutable mandatory message
        channel.ack(3, multiple=True)
    assert "m1 was unroutable (orders order.placed)" in caplog.text
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert remaining(store) == {"m1": (None, clock.now + relay.RETRY_DELAY)}, "never deleted"
    clock.advance(relay.RETRY_DELAY + 0.01)
    connection.ioloop.advance(0.5)
    assert channel.message_ids == ["m0", "m1", "m2", "m1"], "published again after RETRY_DELAY"
    channel.ack(4)  # routable this time: its earlier return is forgotten
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert remaining(store) == {}


def test_the_window_holds_at_most_max_inflight_unconfirmed_messages(store, clock):
    add(store, 7)
    r = make_relay(store, max_inflight=3, batch=2)
    connection = open_connection(r)
    channel = connection.channel_
    assert channel.message_ids == ["m0", "m1", "m2"]
    channel.ack(1)
    assert channel.message_ids == ["m0", "m1", "m2", "m3"], "a confirm frees room, filled at once"
    channel.ack(4, multiple=True)
    assert channel.message_ids == [f"m{n}" for n in range(7)]
    assert len(r._inflight) == 3
    channel.ack(7, multiple=True)
    connection.ioloop.advance(relay.DELETE_DELAY)
    assert remaining(store) == {}


def test_claims_at_most_batch_rows_per_read(store, clock, monkeypatch):
    add(store, 5)
    limits = claims_counted(monkeypatch)
    r = make_relay(store, batch=2, max_inflight=10)
    connection = open_connection(r)
    assert connection.channel_.message_ids == [f"m{n}" for n in range(5)]
    assert limits == [2, 2, 2, 2], "the last read finds the outbox empty"


def test_a_window_with_a_little_room_claims_only_that_much(store, clock, monkeypatch):
    add(store, 5)
    limits = claims_counted(monkeypatch)
    r = make_relay(store, batch=250, max_inflight=3)
    connection = open_connection(r)
    assert limits == [3]
    connection.channel_.ack(1)
    assert limits == [3, 1]


def claims_counted(monkeypatch) -> list[int]:
    limits: list[int] = []
    real = outbox.claim

    def counting(conn, owner, limit, lease):
        limits.append(limit)
        return real(conn, owner, limit, lease)
    monkeypatch.setattr(outbox, "claim", counting)
    return limits


def test_handed_over_rows_are_published_without_reading_the_outbox(store, clock, monkeypatch):
    r = make_relay(store)
    connection = open_connection(r)
    limits = claims_counted(monkeypatch)
    rows = add(store, 2, claimant=r.claimant())
    r.hand_over(rows)
    r.hand_over(add(store, 1, start=2, claimant=r.claimant()))
    assert connection.ioloop.run_callbacks() == 1, "wakes are coalesced"
    assert connection.channel_.message_ids == ["m0", "m1", "m2"]
    assert limits == [], "no read of the outbox"
    r.hand_over([])  # committed unclaimed: now it must look
    connection.ioloop.run_callbacks()
    assert limits == [250]


def test_rows_committed_while_disconnected_are_read_from_the_outbox(store, clock):
    r = make_relay(store)
    assert r.claimant() is None
    rows = add(store, 2)
    r.hand_over(rows)  # not connected: nothing in memory
    assert list(r._handed) == []
    connection = open_connection(r)
    assert connection.channel_.message_ids == ["m0", "m1"]


def test_handed_over_rows_wait_for_room_in_the_window(store, clock, monkeypatch):
    r = make_relay(store, max_inflight=2)
    connection = open_connection(r)
    limits = claims_counted(monkeypatch)
    add(store, 1, start=9)  # committed unclaimed by someone else: for the next read
    r.hand_over(add(store, 3, claimant=r.owner))
    connection.ioloop.run_callbacks()
    assert connection.channel_.message_ids == ["m0", "m1"]
    connection.channel_.ack(2, multiple=True)
    assert connection.channel_.message_ids == ["m0", "m1", "m2"], "the rest of the hand-over"
    assert limits == [], "and no read of the outbox for it"
    connection.ioloop.advance(0.5)
    assert connection.channel_.message_ids == ["m0", "m1", "m2", "m9"]


def test_the_tick_reads_the_outbox_and_comes_again(store, clock):
    r = make_relay(store, poll_interval=0.25)
    connection = open_connection(r)
    assert connection.ioloop.delays == [0.25]
    add(store, 1)
    connection.ioloop.advance(0.25)
    assert connection.channel_.message_ids == ["m0"]
    assert connection.ioloop.delays == [0.25], "scheduled again"
    add(store, 1, start=1)
    connection.ioloop.advance(0.25)
    assert connection.channel_.message_ids == ["m0", "m1"]


def test_the_tick_stops_with_the_connection(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    connection.drop()
    connection.ioloop.advance(0.5)
    assert connection.ioloop.timers == [], "not scheduled again on a closed connection"


def test_rows_claimed_by_a_crashed_predecessor_are_freed_on_connect(store, clock):
    r = make_relay(store)
    add(store, 2, claimant=r.owner)  # its claims, held for 30 s, never published
    connection = open_connection(r)
    assert connection.channel_.message_ids == ["m0", "m1"]


def test_other_relays_claims_are_left_alone(store, clock):
    add(store, 1, claimant="elsewhere:test")
    add(store, 1, start=1)
    r = make_relay(store)
    connection = open_connection(r)
    assert connection.channel_.message_ids == ["m1"]


def test_a_reconnect_deletes_the_confirmed_releases_the_rest_and_restarts_the_tags(store, clock,
                                                                                   monkeypatch):
    add(store, 5)
    r = make_relay(store)
    r._stopping = FakeEvent()
    seen: dict = {}

    def first(connection: FakeSelectConnection) -> None:
        connection.open()
        channel = connection.channel_
        channel.confirm_ok()
        assert channel.message_ids == ["m0", "m1", "m2", "m3", "m4"]
        channel.ack(2, multiple=True)  # m0 m1 confirmed, not yet deleted
        channel.return_(3)
        connection.drop()

    def second(connection: FakeSelectConnection) -> None:
        seen["between"] = remaining(store)
        seen["connected"] = r.connected
        connection.open()
        channel = connection.channel_
        channel.confirm_ok()
        assert channel.message_ids == ["m2", "m3", "m4"]
        channel.ack(1)  # tag 1 of the new channel is m2, not m0
        connection.ioloop.advance(relay.DELETE_DELAY)
        seen["after"] = list(remaining(store))
        channel.ack(3, multiple=True)  # m2's return belonged to the old channel
        connection.close()

    made = run_relay(r, monkeypatch, [first, second])
    assert seen["between"] == {"m2": (None, None), "m3": (None, None), "m4": (None, None)}, \
        "confirmed rows deleted before the claims went back"
    assert seen["connected"] is False
    assert seen["after"] == ["m3", "m4"]
    assert remaining(store) == {}, "the confirmed rows are deleted when the relay leaves"
    assert [c.ioloop.started for c in made] == [1, 1]
    assert [c.ioloop.stopped for c in made] == [1, 1]
    assert len(r._stopping.waits) == 2 and all(0.08 <= w <= 0.1 for w in r._stopping.waits), \
        "short pauses: the backoff was reset once confirms were on"
    assert r._stopped.is_set()


def run_relay(r: Relay, monkeypatch, scripts: list[Callable[[FakeSelectConnection], None]],
              probes: list | None = None) -> list[FakeSelectConnection]:
    """Run `r.run()` with one fake connection per script (each ran when its ioloop starts); the
    broker probe succeeds while scripts are left, then says stop (None)."""
    queue = deque(scripts)
    made: list[FakeSelectConnection] = []
    probes = [] if probes is None else probes

    def connect(broker, stopping, name, nodes):
        assert broker is r._broker and stopping is r._stopping and name == r.name
        assert nodes is r._nodes
        if not queue:
            return None
        probes.append(Probe())
        return probes[-1]

    def factory(parameters, on_open_callback, on_open_error_callback, on_close_callback):
        assert isinstance(parameters, pika.ConnectionParameters)
        connection = FakeSelectConnection(parameters, on_open_callback, on_open_error_callback,
                                          on_close_callback)
        script = queue.popleft()
        connection.ioloop.on_start = lambda: script(connection)
        made.append(connection)
        return connection

    monkeypatch.setattr(relay, "connect", connect)
    monkeypatch.setattr(relay, "CoalescingSelectConnection", factory)
    r.run()
    return made


def test_run_backs_off_longer_after_each_failed_connection(store, clock, monkeypatch):
    r = make_relay(store)
    r._stopping = FakeEvent()

    def refused(connection):
        connection.fail_to_open()

    def channel_fails(connection):
        connection.open()
        connection.channel_.close_by_broker()  # before confirm-select-ok

    probes: list[Probe] = []
    made = run_relay(r, monkeypatch, [refused, channel_fails, refused], probes)
    waits = r._stopping.waits
    assert len(waits) == 3 and waits[0] < waits[1] < waits[2], waits
    assert all(p.closed == 1 for p in probes) and len(probes) == 3
    assert [c.ioloop.stopped for c in made] == [1, 1, 1]
    assert made[1].close_calls == 1, "a closed channel closes its connection"
    assert r._stopped.is_set()


def test_run_stops_without_a_broker(store, monkeypatch):
    r = make_relay(store)
    run_relay(r, monkeypatch, [])
    assert r._stopped.is_set()


def test_run_does_not_pause_once_stopping(store, clock, monkeypatch):
    r = make_relay(store)
    r._stopping = FakeEvent()

    def stopped(connection):
        r._stopping.set()
        connection.fail_to_open()

    run_relay(r, monkeypatch, [stopped, stopped])
    assert r._stopping.waits == []


def test_the_outbox_connection_of_the_relay_thread_is_closed_when_it_ends(store, monkeypatch):
    r = make_relay(store)
    closed: list[bool] = []
    monkeypatch.setattr(r._outbox, "close", lambda: closed.append(True))
    run_relay(r, monkeypatch, [])
    assert closed == [True]


def test_a_channel_closed_by_the_broker_closes_the_connection(store, clock):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    connection.channel_.close_by_broker()
    assert connection.close_calls == 1 and not r.connected and r._channel is None
    assert connection.ioloop.stopped == 1


def test_a_channel_closed_along_with_its_connection_closes_nothing_more(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    connection.drop()
    assert connection.close_calls == 0 and not r.connected


def test_nothing_is_published_on_a_closed_channel(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    connection.channel_.is_open = False
    add(store, 1)
    r._pump(look_in_outbox=True)
    assert connection.channel_.published == []


def test_wake_without_a_connection_does_nothing(store):
    r = make_relay(store)
    r.wake()
    assert r._wake_pending is False


def test_wake_is_coalesced_until_the_relay_has_woken(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    r.wake()
    r.wake()
    assert len(connection.ioloop.callbacks) == 1
    connection.ioloop.run_callbacks()
    r.wake()
    assert len(connection.ioloop.callbacks) == 1


def test_a_wake_that_cannot_reach_the_ioloop_is_not_left_pending(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    connection.ioloop.closed = True
    r.wake()
    connection.ioloop.closed = False
    r.wake()
    assert len(connection.ioloop.callbacks) == 1


def test_a_fresh_connection_forgets_a_wake_pending_on_the_old_one(store, clock, monkeypatch):
    r = make_relay(store)
    r._stopping = FakeEvent()
    woken: list[int] = []

    def first(connection):
        connection.open()
        connection.channel_.confirm_ok()
        r.wake()
        connection.drop()  # the wake never runs

    def second(connection):
        r.wake()
        woken.append(len(connection.ioloop.callbacks))
        connection.fail_to_open()

    run_relay(r, monkeypatch, [first, second])
    assert woken == [1]


# --- the outbox unavailable ---


def failing(monkeypatch, name: str) -> None:
    def fail(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(outbox, name, fail)


def test_an_unreadable_outbox_is_read_again_on_the_next_tick(store, clock, monkeypatch, caplog):
    add(store, 2)
    r = make_relay(store)
    with monkeypatch.context() as m:
        failing(m, "claim")
        connection = open_connection(r)
        assert "could not read the outbox" in caplog.text
    assert connection.channel_.published == []
    connection.ioloop.advance(0.5)
    assert connection.channel_.message_ids == ["m0", "m1"]


def test_rows_that_cannot_be_given_back_wait_for_their_lease(store, clock, monkeypatch, caplog):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    failing(monkeypatch, "release")
    connection.channel_.nack(2, multiple=True)
    assert "could not give back rejected rows" in caplog.text
    assert set(remaining(store).values()) == {(r.owner, clock.now + outbox.CLAIM_LEASE)}
    assert len(r._inflight) == 0


def test_rows_that_cannot_be_deleted_stay_claimed_and_are_deleted_once_the_outbox_is_back(
        store, clock, monkeypatch, caplog):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    with monkeypatch.context() as m:
        failing(m, "delete")
        connection.channel_.ack(2, multiple=True)
        connection.ioloop.advance(relay.DELETE_DELAY)
        assert "could not delete confirmed rows" in caplog.text
        assert set(remaining(store).values()) == {(r.owner, clock.now + outbox.CLAIM_LEASE)}
        connection.ioloop.advance(relay.RETRY_DELAY)  # still unavailable: kept for the next try
        assert len(remaining(store)) == 2
    connection.ioloop.advance(relay.RETRY_DELAY)  # long before the lease lapses
    assert remaining(store) == {}
    assert r._confirmed == []


def test_a_disconnect_while_confirmed_rows_cannot_be_deleted_keeps_them_for_later(
        store, clock, monkeypatch, caplog):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    with monkeypatch.context() as m:
        failing(m, "delete")
        connection.channel_.ack(2, multiple=True)
        connection.drop()
        r._after_disconnect()  # no connection to schedule a retry on: kept, not raised
        assert len(r._confirmed) == 2 and len(remaining(store)) == 2
    again = open_connection(r)
    assert remaining(store) == {} and r._confirmed == [], "deleted as the next channel opens"
    assert again.channel_.message_ids == [], "and so not published a second time"


def test_claims_that_cannot_be_released_on_connect_do_not_stop_the_relay(store, clock, monkeypatch,
                                                                         caplog):
    add(store, 1)
    failing(monkeypatch, "release_all")
    r = make_relay(store)
    connection = open_connection(r)
    assert "could not release its claims" in caplog.text
    assert r.connected and connection.channel_.message_ids == ["m0"]
    connection.drop()
    r._after_disconnect()  # and again at the disconnect
    assert caplog.text.count("could not release its claims") == 2


# --- stopping ---


def test_stop_flushes_the_outbox_and_waits_for_the_outstanding_confirms(store, clock):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    add(store, 1, start=2)  # committed just before the stop: still published
    r.stop(timeout=5.0)
    assert r._stopped.waits == [7.0]
    assert connection.ioloop.run_callbacks() == 1
    channel = connection.channel_
    assert channel.message_ids == ["m0", "m1", "m2"]
    assert connection.close_calls == 0, "confirms outstanding"
    channel.ack(2, multiple=True)
    assert connection.close_calls == 0
    channel.ack(3)
    assert connection.close_calls == 1, "drained and confirmed: the relay disconnects at once"
    assert remaining(store) == {}, "deleted without waiting for the timer"
    assert connection.ioloop.stopped == 1


def test_stop_gives_up_waiting_at_the_deadline(store, clock):
    add(store, 3)
    r = make_relay(store, max_inflight=2)
    connection = open_connection(r)
    connection.channel_.ack(1)  # m0 confirmed; m1 m2 in flight
    r.stop(timeout=2.0)
    connection.ioloop.run_callbacks()
    assert connection.close_calls == 0
    clock.advance(2.0)
    r._pump()
    assert connection.close_calls == 1
    assert connection.channel_.message_ids == ["m0", "m1", "m2"]
    r._after_disconnect()
    assert remaining(store) == {"m1": (None, None), "m2": (None, None)}


def test_past_the_deadline_nothing_more_is_published(store, clock):
    r = make_relay(store, max_inflight=2)
    connection = open_connection(r)
    r.hand_over(add(store, 2, claimant=r.owner))
    add(store, 1, start=2)
    r.stop(timeout=0.0)
    connection.ioloop.run_callbacks()  # the wake and the stop
    assert connection.channel_.published == []
    assert connection.close_calls == 1


def test_stop_without_a_connection_only_waits_for_the_thread(store):
    r = make_relay(store)
    r.stop(timeout=1.0)
    assert r._stopping.is_set() and r._stopped.waits == [3.0]


def test_stop_while_connecting_ends_the_ioloop(store, clock):
    r = make_relay(store)
    connection = FakeSelectConnection(None, r._on_open, r._on_open_error, r._on_closed)
    r._connection = connection  # not open yet
    r.stop(timeout=0.0)
    connection.ioloop.run_callbacks()
    assert connection.ioloop.stopped == 1 and connection.close_calls == 0


def test_stop_while_closing_waits_for_the_close(store, clock):
    r = make_relay(store)
    connection = FakeSelectConnection(None, r._on_open, r._on_open_error, r._on_closed)
    connection.is_closing = True
    r._connection = connection
    r.stop(timeout=0.0)
    connection.ioloop.run_callbacks()
    assert connection.ioloop.stopped == 0 and connection.close_calls == 0


def test_a_drained_relay_that_is_not_stopping_stays_connected(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    connection.ioloop.advance(0.5)
    assert r._drained and connection.close_calls == 0


def test_stop_with_nothing_in_flight_disconnects_after_one_read(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    r.stop()
    connection.ioloop.run_callbacks()
    assert connection.close_calls == 1 and connection.ioloop.stopped == 1


# --- defaults, logs and corners ---


def test_the_default_window_is_a_thousand_messages(store, clock):
    add(store, 1001)
    r = make_relay(store)
    connection = open_connection(r)
    assert len(connection.channel_.published) == 1000


def test_stop_waits_five_seconds_for_confirms_by_default(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    r.stop()
    assert r._flush_deadline == clock.now + 5.0 and r._stopped.waits == [7.0]
    assert connection.ioloop.callbacks


def test_nothing_can_be_run_on_the_ioloop_without_a_connection(store):
    r = make_relay(store)
    assert r._call_soon(lambda: None) is False


def test_what_the_relay_logs_about_its_connection(store, clock, caplog):
    r = make_relay(store)
    with caplog.at_level(logging.INFO, logger="messaging.amqp.relay"):
        connection = FakeSelectConnection(None, r._on_open, r._on_open_error, r._on_closed)
        connection.fail_to_open(pika.exceptions.AMQPConnectionError("refused"))
        connection = open_connection(r)
        connection.channel_.close_by_broker()
    assert logged(caplog) == [
        "test-relay could not open a connection: AMQPConnectionError: ('refused',)",
        "test-relay publishing with confirms",
        "test-relay channel closed: ChannelClosedByBroker: (406) 'PRECONDITION_FAILED'",
        "test-relay lost its connection: ConnectionClosedByClient: (200) 'Normal shutdown'",
    ]


def test_a_stopping_relay_does_not_warn_about_its_own_disconnect(store, clock, caplog):
    r = make_relay(store)
    connection = open_connection(r)
    r._stopping.set()
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.relay"):
        connection.channel_.close_by_broker()
    assert logged(caplog) == []
    assert not r.connected and connection.ioloop.stopped == 1


def test_what_the_relay_logs_about_rejected_messages(store, clock, caplog):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.relay"):
        connection.channel_.return_(1)
        connection.channel_.nack(2, multiple=True)
    assert logged(caplog) == [
        "test-relay: message m0 was unroutable (orders order.placed); will retry",
        "test-relay: 2 message(s) nacked or unroutable; retrying",
    ]


@pytest.mark.parametrize(("table_function", "act", "expected"), [
    ("claim", lambda r, c: None, "test-relay could not read the outbox; retrying on the next tick"),
    ("release", lambda r, c: c.channel_.nack(1),
     "test-relay could not give back rejected rows; they return after the lease"),
    ("delete", lambda r, c: (c.channel_.ack(1), c.ioloop.advance(relay.DELETE_DELAY)),
     "test-relay could not delete confirmed rows; trying again in 1.0s"),
    ("release_all", lambda r, c: r._after_disconnect(),
     "test-relay could not release its claims; they expire with the lease"),
])
def test_what_the_relay_logs_when_the_outbox_is_unavailable(store, clock, monkeypatch, caplog,
                                                            table_function, act, expected):
    add(store, 1)
    r = make_relay(store)
    connection = open_connection(r)
    failing(monkeypatch, table_function)
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.relay"):
        act(r, connection)
        connection.ioloop.advance(0.5)
    assert expected in logged(caplog)
    record = next(rec for rec in caplog.records if rec.getMessage() == expected)
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_confirms_and_wakes_while_the_connection_closes_are_harmless(store, clock):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    connection.async_close = True  # pika calls on_close_callback later
    connection.channel_.close_by_broker()
    assert r.connected and r._channel is None and connection.close_calls == 1
    add(store, 1, start=2)
    r._pump(look_in_outbox=True)
    r.hand_over(add(store, 1, start=3, claimant=r.owner))
    connection.ioloop.run_callbacks()
    assert connection.channel_.message_ids == ["m0", "m1"]


def test_after_a_disconnect_hand_over_and_wake_only_note_the_rows(store, clock):
    r = make_relay(store)
    connection = open_connection(r)
    connection.drop()
    r._after_disconnect()
    r.hand_over(add(store, 1, claimant=r.owner))
    r.wake()
    assert r._look_in_outbox and connection.ioloop.callbacks == []


def test_stop_while_connecting_waits_for_the_connection_to_flush(store, clock):
    add(store, 1)
    r = make_relay(store)
    connection = FakeSelectConnection(None, r._on_open, r._on_open_error, r._on_closed)
    r._connection = connection
    r.stop(timeout=5.0)
    connection.ioloop.run_callbacks()
    assert connection.ioloop.stopped == 0, "not drained yet: wait for the connection"
    connection.open()
    connection.channel_.confirm_ok()
    assert connection.channel_.message_ids == ["m0"]
    connection.channel_.ack(1)
    assert connection.close_calls == 1 and remaining(store) == {}


def test_a_full_window_at_the_tick_reads_the_outbox_as_soon_as_a_confirm_frees_room(store, clock,
                                                                                    monkeypatch):
    add(store, 2)
    r = make_relay(store, max_inflight=2)
    connection = open_connection(r)
    connection.ioloop.advance(0.5)  # a tick finds the outbox drained
    add(store, 1, start=2)
    connection.ioloop.advance(0.5)  # a tick with the window full
    assert connection.channel_.message_ids == ["m0", "m1"]
    connection.channel_.ack(1)
    assert connection.channel_.message_ids == ["m0", "m1", "m2"], "without waiting for the next tick"


@pytest.mark.parametrize("tick", [False, True])
def test_a_drained_outbox_is_not_read_again_on_each_confirm(store, clock, monkeypatch, tick):
    add(store, 1)
    r = make_relay(store, max_inflight=2)
    connection = open_connection(r)  # m0 in flight, room for one more, the outbox drained
    if tick:
        connection.ioloop.advance(0.5)  # reads with room for one, finds nothing
    limits = claims_counted(monkeypatch)
    connection.channel_.ack(1)
    assert limits == [], "the outbox was drained and the window never full: wait for the tick"


def test_a_failed_read_while_stopping_still_finishes(store, clock, monkeypatch):
    r = make_relay(store)
    connection = open_connection(r)  # finds the outbox empty: drained
    failing(monkeypatch, "claim")
    r.stop(timeout=5.0)
    connection.ioloop.run_callbacks()
    assert connection.close_calls == 1


def test_connected_is_false_before_the_first_connection_and_after_each(store, clock):
    r = make_relay(store)
    assert r.connected is False, "health reports it as is"
    connection = open_connection(r)
    assert r.connected is True
    connection.drop()
    assert r.connected is False


# --- the broker refuses the topology ---


def mismatch() -> QueueMismatch:
    return QueueMismatch("order-events", topology.QUORUM,
                         "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                         "'order-events' in vhost '/': received 'quorum' but current is 'classic'")


def refuse_topology(r: Relay, monkeypatch, error: QueueMismatch) -> list[bool]:
    """Make the probe raise `error`; return the list the outbox's close() appends to."""
    def connect(broker, stopping, name, nodes):
        raise error

    def factory(*args, **kwargs):
        raise AssertionError("no SelectConnection after the topology was refused")

    closed: list[bool] = []
    monkeypatch.setattr(relay, "connect", connect)
    monkeypatch.setattr(relay, "CoalescingSelectConnection", factory)
    monkeypatch.setattr(r._outbox, "close", lambda: closed.append(True))
    return closed


def test_a_refused_topology_stops_the_relay_for_good_and_tells_on_refused(store, monkeypatch, caplog):
    told: list[QueueMismatch] = []
    r = make_relay(store, on_refused=told.append)
    r._stopping = FakeEvent()
    error = mismatch()
    closed = refuse_topology(r, monkeypatch, error)
    with caplog.at_level(logging.INFO, logger="messaging.amqp.relay"):
        r.run()
    assert len(told) == 1 and told[0] is error, "told once, with the broker's refusal"
    assert r._stopping.is_set() and r._stopping.waits == [], "no retry: no reconnect mends it"
    assert closed == [True] and r._stopped.is_set(), "the thread still ends as usual"
    assert logged(caplog) == [], "on_refused reports it, not the relay's log"


def test_a_refused_topology_without_on_refused_is_logged_as_an_error(store, monkeypatch, caplog):
    r = make_relay(store)
    r._stopping = FakeEvent()
    error = mismatch()
    closed = refuse_topology(r, monkeypatch, error)
    with caplog.at_level(logging.INFO, logger="messaging.amqp.relay"):
        r.run()
    records = [rec for rec in caplog.records if rec.name == "messaging.amqp.relay"]
    assert [(rec.levelno, rec.getMessage()) for rec in records] == [
        (logging.ERROR, f"test-relay stopped: {error}")]
    assert "is a classic queue on the broker" in records[0].getMessage()
    assert r._stopping.is_set() and closed == [True] and r._stopped.is_set()


def run_for(connection: FakeSelectConnection, clock: FakeClock, seconds: float) -> None:
    """Let the relay's ticks run for `seconds`, the outbox's clock moving with the loop's."""
    for _ in range(round(seconds / 0.5)):
        clock.advance(0.5)
        connection.ioloop.advance(0.5)


def claimed_by_other(store: MessagingStore) -> list[PendingMessage]:
    return store.write(lambda conn: outbox.claim(conn, "other-relay", 10, outbox.CLAIM_LEASE))


def test_a_connected_relay_renews_its_claims_so_another_relay_never_takes_them(store, clock):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)  # published, never confirmed: the broker is slow
    run_for(connection, clock, 3 * outbox.CLAIM_LEASE)
    claims = set(remaining(store).values())
    assert len(claims) == 1 and claims.pop()[0] == r.owner
    assert claimed_by_other(store) == []
    assert connection.channel_.message_ids == ["m0", "m1"], "published once"


def test_claims_lapse_within_a_lease_once_their_relay_stops_renewing(store, clock):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    run_for(connection, clock, outbox.CLAIM_LEASE)
    connection.ioloop.timers.clear()  # the relay's process died: no more ticks
    clock.advance(outbox.CLAIM_LEASE - 0.5)
    assert claimed_by_other(store) == []
    clock.advance(1.0)
    assert [row.message.message_id for row in claimed_by_other(store)] == ["m0", "m1"]


def test_a_renewal_that_fails_is_tried_again_on_the_next_tick(store, clock, monkeypatch, caplog):
    add(store, 2)
    r = make_relay(store)
    connection = open_connection(r)
    with monkeypatch.context() as m:
        failing(m, "renew")
        run_for(connection, clock, outbox.RENEW_EVERY)
        assert "could not renew its claims" in caplog.text
        assert f"{r.name} could not renew its claims; trying again on the next tick" in logged(caplog)
    run_for(connection, clock, 0.5)
    assert set(remaining(store).values()) == {(r.owner, clock.now + outbox.CLAIM_LEASE)}


def test_claims_are_renewed_every_renew_interval_not_on_every_tick(store, clock, monkeypatch):
    add(store, 1)
    renewals = []
    real = outbox.renew
    monkeypatch.setattr(outbox, "renew", lambda *args: renewals.append(clock.now) or real(*args))
    connection = open_connection(make_relay(store))
    run_for(connection, clock, 4 * outbox.RENEW_EVERY)
    assert len(renewals) == 4, renewals


def test_every_message_is_published_as_the_connections_broker_user(store, clock):
    add(store, 2)
    r = Relay(BrokerSettings(user="order_service"), store, "test")
    r._stopped = FakeEvent()
    channel = open_connection(r).channel_
    assert [p.properties.user_id for p in channel.published] == ["order_service", "order_service"], \
        "the consumers believe a result only from the user entitled to send it"
