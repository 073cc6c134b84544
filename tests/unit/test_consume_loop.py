"""ConsumeLoop against a fake BlockingConnection: batches, retries, splitting, dead letters, the
redelivery limit, refused dead letters, reconnects. Redeliveries are counted in a real SQLite store."""
from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator

import pika.exceptions
import pytest

from messaging import topology
from messaging.amqp import connection as connection_module
from messaging.amqp import consume_loop, dead_lettering
from messaging.amqp.consume_loop import ConsumeLoop
from messaging.amqp.delivery import Delivery, Rejection
from messaging.db.dialect import SQLITE
from messaging.db.messaging_store import MessagingStore
from messaging.db.sqlite import Database
from messaging.settings import BrokerSettings, ConsumerSettings
from tests.amqp_frames import decoded, double, field, properties_bytes, table, timestamp
from tests.unit.fake_pika import (
    IDLE,
    FakeBlockingConnection,
    FakeClock,
    FakeEvent,
    Script,
    Settled,
    connections,
    deliver,
    nacked,
    unroutable,
)

QUEUE = topology.ORDER_EVENTS
SETTINGS = ConsumerSettings(prefetch=50, max_batch=50, retry_limit=3, retry_base_delay=0.2,
                            redelivery_limit=10)


class Handler:
    """A service's batch handler: records the tags of every call; `behave` decides what it does."""

    def __init__(self, behave: Callable[[list[Delivery]], list[Rejection]] | None = None) -> None:
        self.calls: list[list[int]] = []
        self.behave = behave or (lambda batch: [])

    def __call__(self, batch: list[Delivery]) -> list[Rejection]:
        self.calls.append([d.tag for d in batch])
        return self.behave(batch)


def rejecting(*tags: int, reason: str = "invalid-json") -> Handler:
    return Handler(lambda batch: [Rejection(d, reason, f"tag {d.tag} is poison")
                                  for d in batch if d.tag in tags])


def failing_on(tag: int, error: Callable[[], Exception], times: int | None = None) -> Handler:
    """Raise `error()` on every batch holding `tag` (only the first `times` times, if given)."""
    failures = [0]

    def behave(batch: list[Delivery]) -> list[Rejection]:
        if any(d.tag == tag for d in batch) and (times is None or failures[0] < times):
            failures[0] += 1
            raise error()
        return []
    return Handler(behave)


def locked() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database is locked")


@pytest.fixture
def store(storage) -> Iterator[MessagingStore]:
    db = MessagingStore(Database(storage.path("consume_loop.db"), storage))
    yield db
    db.close()


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(dead_lettering, "time", fake)
    monkeypatch.setattr(consume_loop, "time", fake)  # owed acks fall due only when the test says
    return fake


def make_loop(handler: Handler, settings: ConsumerSettings = SETTINGS, **kwargs) -> ConsumeLoop:
    kwargs.setdefault("is_transient", SQLITE.is_transient)
    loop = ConsumeLoop(BrokerSettings(), QUEUE, handler, "svc", settings, **kwargs)
    loop._stopping = FakeEvent()  # waits return at once, and are recorded
    return loop


def run(loop: ConsumeLoop, monkeypatch, *scripts: Script | FakeBlockingConnection) -> list:
    """Run the loop over one fake connection per script; it stops when the last script runs out."""
    made = [s if isinstance(s, FakeBlockingConnection) else FakeBlockingConnection(s) for s in scripts]
    connections(monkeypatch, consume_loop, made, loop.stop)
    loop.run()
    return made


def logged(caplog) -> list[str]:
    """What the consume loop itself logged."""
    return [record.getMessage() for record in caplog.records if record.name == "messaging.amqp.consume_loop"]


def counted(store: MessagingStore) -> dict[str, int]:
    return dict(store.conn.execute("SELECT message_key, attempts FROM deliveries").fetchall())


# --- batches ---


def test_a_burst_is_handled_as_one_batch_and_acked_once_with_its_highest_tag(monkeypatch):
    handler = Handler()
    loop = make_loop(handler)
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2), deliver(3), IDLE, deliver(4)]))
    assert handler.calls == [[1, 2, 3], [4]]
    assert connection.consumer.settled == [Settled("ack", 3, True), Settled("ack", 4, True)]
    assert connection.consumer.qos == 50
    assert connection.consumer.consumed == [("order-events", 0.2)]
    assert connection.dead_letters.confirming, "dead letters are published with confirms"
    assert connection.consumer.cancelled == 1 and connection.closed == 1
    assert loop.processed == 4 and not loop.consuming


def test_a_batch_holds_at_most_max_batch_deliveries(monkeypatch):
    handler = Handler()
    loop = make_loop(handler, ConsumerSettings(prefetch=10, max_batch=2))
    run(loop, monkeypatch, Script([deliver(n) for n in range(1, 6)]))
    assert handler.calls == [[1, 2], [3, 4], [5]]


def test_a_delivery_carries_what_the_broker_sent(monkeypatch):
    seen: list[Delivery] = []
    loop = make_loop(Handler(lambda batch: seen.extend(batch) or []))
    run(loop, monkeypatch, Script([deliver(7, b"body", redelivered=True, message_id="x",
                                           exchange="inventory", routing_key="inventory.failed")]))
    [d] = seen
    assert (d.tag, d.exchange, d.routing_key, d.redelivered, d.body, d.properties.message_id) == \
        (7, "inventory", "inventory.failed", True, b"body", "x")


def test_poison_in_the_middle_is_dead_lettered_and_the_batch_acked_once(monkeypatch, clock):
    handler = rejecting(2)
    loop = make_loop(handler)
    script = Script([deliver(1), deliver(2, b"not json", message_id="p", headers={"trace": "t1"},
                                         correlation_id="c", type="OrderPlaced", timestamp=5,
                                         content_type="application/json", content_encoding="utf-8"),
                     deliver(3)])
    [connection] = run(loop, monkeypatch, script)
    assert handler.calls == [[1, 2, 3]]
    assert connection.consumer.settled == [Settled("ack", 3, True)], "one multiple-ack, the highest tag"
    [letter] = connection.dead_letters.published
    assert (letter.exchange, letter.routing_key, letter.body, letter.mandatory) == \
        ("dlx", "order-events-dlq", b"not json", True)
    props = letter.properties
    assert (props.message_id, props.correlation_id, props.type, props.timestamp, props.delivery_mode,
            props.content_type, props.content_encoding) == \
        ("p", "c", "OrderPlaced", 5, 2, "application/json", "utf-8")
    assert props.headers == {
        "trace": "t1",
        "x-dlq-reason": "invalid-json", "x-dlq-error": "tag 2 is poison", "x-dlq-attempts": 1,
        "x-dlq-service": "svc", "x-dlq-queue": "order-events", "x-dlq-at": int(clock.now),
        "x-original-exchange": "orders", "x-original-routing-key": "order.placed"}
    assert loop.processed == 3


def test_poison_with_the_highest_tag_is_still_acked_after_its_dead_letter(monkeypatch):
    loop = make_loop(rejecting(3))
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2), deliver(3)]))
    assert connection.consumer.settled == [Settled("ack", 3, True)]
    assert len(connection.dead_letters.published) == 1


# --- transient and permanent failures ---


def test_a_transient_failure_is_retried_with_doubling_delays(monkeypatch):
    handler = failing_on(1, locked, times=2)
    loop = make_loop(handler)
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2)]))
    assert handler.calls == [[1, 2]] * 3
    assert connection.sleeps == [0.2, 0.4]
    assert connection.consumer.settled == [Settled("ack", 2, True)]
    assert connection.dead_letters.published == []


def test_a_lasting_transient_failure_splits_the_batch_and_rejects_only_the_culprit(monkeypatch):
    handler = failing_on(2, locked)
    loop = make_loop(handler, ConsumerSettings(retry_limit=3, retry_base_delay=0.5))
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2), deliver(3)]))
    assert handler.calls == [[1, 2, 3]] * 3 + [[1]] + [[2]] * 3 + [[3]]
    assert connection.sleeps == [0.5, 1.0, 0.5, 1.0], "retry_limit tries, delays doubling"
    [letter] = connection.dead_letters.published
    headers = letter.properties.headers
    assert (headers["x-dlq-reason"], headers["x-dlq-attempts"], headers["x-dlq-error"]) == \
        ("transient-retries-exhausted", 3, "sqlite3.OperationalError: database is locked")
    assert connection.consumer.settled == [Settled("ack", 3, True)]


def test_a_permanent_failure_is_not_retried(monkeypatch):
    handler = failing_on(2, lambda: ValueError("boom"))
    loop = make_loop(handler)
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2), deliver(3)]))
    assert handler.calls == [[1, 2, 3], [1], [2], [3]]
    assert connection.sleeps == []
    [letter] = connection.dead_letters.published
    headers = letter.properties.headers
    assert (headers["x-dlq-reason"], headers["x-dlq-attempts"], headers["x-dlq-error"]) == \
        ("handler-error", 1, "ValueError: boom")
    assert connection.consumer.settled == [Settled("ack", 3, True)]


def test_a_single_failing_message_is_rejected_without_splitting(monkeypatch, caplog):
    handler = failing_on(1, lambda: KeyError("k"))
    loop = make_loop(handler)
    with caplog.at_level(logging.WARNING):
        [connection] = run(loop, monkeypatch, Script([deliver(1)]))
    assert handler.calls == [[1]]
    assert "one message at a time" not in caplog.text
    assert connection.dead_letters.published[0].properties.headers["x-dlq-error"] == "KeyError: 'k'"


def test_the_rejections_of_split_batches_are_all_collected(monkeypatch):
    def behave(batch):
        if len(batch) > 1:
            raise ValueError("batch")
        return [Rejection(batch[0], "invalid-json", "bad")] if batch[0].tag in (1, 3) else []
    loop = make_loop(Handler(behave))
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2), deliver(3)]))
    assert len(connection.dead_letters.published) == 2
    assert connection.consumer.settled == [Settled("ack", 3, True)]


def test_without_a_transient_predicate_nothing_is_retried(monkeypatch):
    handler = failing_on(1, locked)
    loop = ConsumeLoop(BrokerSettings(), QUEUE, handler, "svc", SETTINGS)
    loop._stopping = FakeEvent()
    [connection] = run(loop, monkeypatch, Script([deliver(1)]))
    assert handler.calls == [[1]] and connection.sleeps == []
    assert connection.dead_letters.published[0].properties.headers["x-dlq-reason"] == "handler-error"


def test_a_retry_limit_of_one_means_no_retry(monkeypatch):
    handler = failing_on(1, locked)
    loop = make_loop(handler, ConsumerSettings(retry_limit=1))
    [connection] = run(loop, monkeypatch, Script([deliver(1)]))
    assert handler.calls == [[1]] and connection.sleeps == []
    headers = connection.dead_letters.published[0].properties.headers
    assert (headers["x-dlq-reason"], headers["x-dlq-attempts"]) == ("transient-retries-exhausted", 1)


# --- the redelivery limit ---


def test_a_message_redelivered_past_the_limit_is_dead_lettered_unhandled(monkeypatch, store):
    for _ in range(9):
        store.count_redelivery("id:crash")  # 10 deliveries so far
    handler = Handler()
    loop = make_loop(handler, count_redelivery=store.count_redelivery)
    [connection] = run(loop, monkeypatch, Script([
        deliver(1, redelivered=True, message_id="crash"), deliver(2, redelivered=True, message_id="b"),
        deliver(3, message_id="c")]))
    assert handler.calls == [[2, 3]]
    [letter] = connection.dead_letters.published
    headers = letter.properties.headers
    assert (headers["x-dlq-reason"], headers["x-dlq-error"], headers["x-dlq-attempts"]) == \
        ("redelivery-limit", "delivered 11 times without being settled", 11)
    assert counted(store) == {"id:crash": 11, "id:b": 2}, "a first delivery is not counted"
    assert connection.consumer.settled == [Settled("ack", 3, True)]
    assert loop.processed == 2


def test_the_limit_itself_is_still_handled(monkeypatch, store):
    for _ in range(8):
        store.count_redelivery("id:m")  # 9 so far: this one is the 10th
    handler = Handler()
    loop = make_loop(handler, count_redelivery=store.count_redelivery)
    run(loop, monkeypatch, Script([deliver(1, redelivered=True, message_id="m")]))
    assert handler.calls == [[1]] and counted(store) == {"id:m": 10}


def test_a_message_without_an_id_is_counted_by_its_body(monkeypatch, store):
    loop = make_loop(Handler(), count_redelivery=store.count_redelivery)
    run(loop, monkeypatch, Script([deliver(1, b"abc", redelivered=True)]))
    assert counted(store) == {
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad": 2}


def test_a_batch_entirely_over_the_limit_calls_no_handler(monkeypatch):
    handler = Handler()
    loop = make_loop(handler, count_redelivery=lambda key: 99)
    [connection] = run(loop, monkeypatch,
                       Script([deliver(1, redelivered=True), deliver(2, redelivered=True)]))
    assert handler.calls == []
    assert len(connection.dead_letters.published) == 2
    assert connection.consumer.settled == [Settled("ack", 2, True)]
    assert loop.processed == 0


def test_without_redeliveries_nothing_is_counted(monkeypatch):
    keys: list[str] = []
    loop = make_loop(Handler(), count_redelivery=lambda key: keys.append(key) or 2)
    run(loop, monkeypatch, Script([deliver(1), deliver(2)]))
    assert keys == []


def test_without_a_counter_redeliveries_are_simply_handled(monkeypatch):
    handler = Handler()
    loop = make_loop(handler)
    run(loop, monkeypatch, Script([deliver(1, redelivered=True)]))
    assert handler.calls == [[1]]


def test_on_quorum_queues_the_broker_counts_deliveries_and_the_loop_does_not(monkeypatch):
    """A quorum queue dead-letters past its x-delivery-limit itself: the loop's counter is unused."""
    keys: list[str] = []
    handler = Handler()
    loop = ConsumeLoop(BrokerSettings(queue_type=topology.QUORUM), QUEUE, handler, "svc", SETTINGS,
                       is_transient=SQLITE.is_transient,
                       count_redelivery=lambda key: keys.append(key) or SETTINGS.redelivery_limit + 5)
    loop._stopping = FakeEvent()
    [connection] = run(loop, monkeypatch, Script([deliver(1, redelivered=True, message_id="m1")]))
    assert keys == [], "no redelivery counted"
    assert handler.calls == [[1]], "handled, not dead-lettered by the loop"
    assert connection.consumer.settled == [Settled("ack", 1, True)]
    assert connection.dead_letters.published == []


def test_a_transient_failure_to_count_a_redelivery_is_retried(monkeypatch, store):
    """Fixed bug: the error escaped the loop, which dropped the connection and started over."""
    failures = [locked()]

    def count(key: str) -> int:
        if failures:
            raise failures.pop()
        return store.count_redelivery(key)
    handler = Handler()
    loop = make_loop(handler, count_redelivery=count)
    [connection] = run(loop, monkeypatch, Script([deliver(1, redelivered=True, message_id="m")]))
    assert connection.sleeps == [0.2], "retried after connection.sleep"
    assert handler.calls == [[1]]
    assert connection.consumer.settled == [Settled("ack", 1, True)]
    assert counted(store) == {"id:m": 2}
    assert loop._stopping.waits == [], "no reconnect"


def test_a_counter_that_keeps_failing_leaves_the_batch_unsettled_and_reconnects(monkeypatch, caplog):
    def count(key):
        raise locked()
    handler = Handler()
    loop = make_loop(handler, count_redelivery=count)
    first = FakeBlockingConnection(Script([deliver(1, redelivered=True), deliver(2)]))
    run(loop, monkeypatch, first, Script([]))
    assert first.sleeps == [0.2, 0.4]
    assert handler.calls == [] and first.consumer.settled == []
    assert len(loop._stopping.waits) == 1
    assert "unexpected error; reconnecting" in caplog.text


def test_a_permanent_failure_to_count_is_not_retried(monkeypatch):
    def count(key):
        raise ValueError("no")
    loop = make_loop(Handler(), count_redelivery=count)
    first = FakeBlockingConnection(Script([deliver(1, redelivered=True)]))
    run(loop, monkeypatch, first, Script([]))
    assert first.sleeps == [] and first.consumer.settled == []


# --- dead letters the broker refuses ---


def refusing_connection(script: Script, *refusals) -> FakeBlockingConnection:
    """A connection whose dead-letter channel (its second) answers the next publishes with `refusals`."""
    connection = FakeBlockingConnection(script)
    original = connection.channel

    def channel():
        made = original()
        if len(connection.channels) == 2:
            made.refuse_next(*refusals)
        return made
    connection.channel = channel
    return connection


@pytest.mark.parametrize("refusal", [nacked, unroutable])
def test_a_refused_dead_letter_puts_its_delivery_back_and_acks_the_rest(monkeypatch, refusal):
    loop = make_loop(rejecting(2))
    connection = refusing_connection(Script([deliver(1), deliver(2, message_id="p"), deliver(3)]),
                                     refusal())
    run(loop, monkeypatch, connection)
    assert connection.consumer.settled == [Settled("nack", 2, False, True), Settled("ack", 3, True)], \
        "put back (not rejected: its dead letter is in no queue), the others acked"
    [pause] = connection.sleeps
    assert 0.08 <= pause <= 0.1
    assert loop.processed == 3


def test_a_put_back_dead_letter_is_not_counted_as_a_crash_redelivery(monkeypatch, store):
    keys: list[str] = []

    def count(key):
        keys.append(key)
        return store.count_redelivery(key)
    handler = rejecting(2, 4, 5, 6)
    loop = make_loop(handler, count_redelivery=count)
    connection = refusing_connection(Script([
        deliver(1), deliver(2, message_id="p"), IDLE,
        deliver(4, redelivered=True, message_id="p"), IDLE,  # our own nack brought it back
        deliver(5, redelivered=True, message_id="p"), IDLE,
        deliver(6, redelivered=True, message_id="p"),  # a crash redelivery: counted
    ]), nacked(), unroutable(), None, None)
    run(loop, monkeypatch, connection)
    settled = connection.consumer.settled
    assert settled == [Settled("nack", 2, False, True), Settled("ack", 1, True),
                       Settled("nack", 4, False, True), Settled("ack", 5, True), Settled("ack", 6, True)]
    assert keys == ["id:p"] and counted(store) == {"id:p": 2}
    assert handler.calls == [[1, 2], [4], [5], [6]]
    first, second = connection.sleeps
    assert 0.08 <= first <= 0.1 and 0.16 <= second <= 0.2, "the pause grows while the DLQ refuses"


def test_the_refusal_pause_starts_over_once_a_dead_letter_is_taken(monkeypatch):
    loop = make_loop(rejecting(1, 2, 3, 4))
    connection = refusing_connection(Script([deliver(1), IDLE, deliver(2), IDLE, deliver(3), IDLE,
                                             deliver(4)]),
                                     nacked(), nacked(), None, nacked())
    run(loop, monkeypatch, connection)
    first, second, third = connection.sleeps
    assert first < second and 0.08 <= third <= 0.1


def test_a_batch_whose_only_dead_letter_is_refused_acks_nothing(monkeypatch):
    loop = make_loop(rejecting(1))
    connection = refusing_connection(Script([deliver(1)]), unroutable())
    run(loop, monkeypatch, connection)
    assert connection.consumer.settled == [Settled("nack", 1, False, True)]


def test_a_clean_batch_keeps_the_refusal_pause(monkeypatch):
    loop = make_loop(rejecting(1, 3))
    connection = refusing_connection(Script([deliver(1), IDLE, deliver(2), IDLE, deliver(3)]),
                                     nacked(), nacked())
    run(loop, monkeypatch, connection)
    first, second = connection.sleeps
    assert 0.16 <= second <= 0.2, "a batch with nothing to dead-letter says nothing about the DLQ"


# --- acks owed across messages handled alone ---

ONE_BY_ONE = ConsumerSettings(prefetch=50, max_batch=1)  # every message a batch of its own


def test_messages_handled_alone_in_a_row_are_acked_together_once_the_queue_is_quiet(monkeypatch):
    handler = Handler()
    loop = make_loop(handler, ONE_BY_ONE)
    [connection] = run(loop, monkeypatch, Script([deliver(n) for n in range(1, 5)] + [IDLE, deliver(5)]))
    assert handler.calls == [[1], [2], [3], [4], [5]]
    assert connection.consumer.settled == [Settled("ack", 4, True), Settled("ack", 5, True)]


def test_an_owed_ack_is_sent_once_it_has_waited_ack_delay(monkeypatch, clock):
    handler = Handler(lambda batch: clock.advance(consume_loop.ACK_DELAY) or [])  # each takes that long
    loop = make_loop(handler, ONE_BY_ONE)
    [connection] = run(loop, monkeypatch, Script([deliver(n) for n in range(1, 5)]))
    # owed from the first message, due as the second is settled; owed again from the third
    assert connection.consumer.settled == [Settled("ack", 2, True), Settled("ack", 4, True)]


def test_no_more_than_a_tenth_of_the_prefetch_is_owed(monkeypatch):
    loop = make_loop(Handler(), ConsumerSettings(prefetch=20, max_batch=1))
    [connection] = run(loop, monkeypatch, Script([deliver(n) for n in range(1, 6)]))
    assert connection.consumer.settled == [Settled("ack", 2, True), Settled("ack", 4, True),
                                           Settled("ack", 5, True)]


def test_a_prefetch_of_one_acks_every_message_at_once(monkeypatch):
    loop = make_loop(Handler(), ConsumerSettings(prefetch=1, max_batch=1))
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2)]))
    assert connection.consumer.settled == [Settled("ack", 1, True), Settled("ack", 2, True)]


def test_a_batch_of_several_is_acked_before_the_next_is_handled(monkeypatch):
    connection = FakeBlockingConnection(Script([deliver(n) for n in range(1, 5)]))
    acked_before: list[list[int]] = []
    handler = Handler(lambda batch: acked_before.append([s.tag for s in connection.consumer.settled]) or [])
    run(make_loop(handler, ConsumerSettings(prefetch=50, max_batch=2)), monkeypatch, connection)
    assert handler.calls == [[1, 2], [3, 4]]
    assert acked_before == [[], [2]], "a busy queue's batches share their ack already"
    assert connection.consumer.settled == [Settled("ack", 2, True), Settled("ack", 4, True)]


def test_a_dead_letter_is_acked_at_once_with_what_was_owed(monkeypatch):
    loop = make_loop(rejecting(3), ONE_BY_ONE)
    [connection] = run(loop, monkeypatch, Script([deliver(n) for n in range(1, 7)]))
    assert len(connection.dead_letters.published) == 1
    assert connection.consumer.settled == [Settled("ack", 3, True), Settled("ack", 6, True)]


def test_acks_owed_on_a_lost_channel_are_never_sent_on_the_next(monkeypatch):
    loop = make_loop(Handler(), ONE_BY_ONE)
    closed = pika.exceptions.ConnectionClosed(320, "x")
    lost, again = run(loop, monkeypatch, Script([deliver(1), deliver(2), deliver(3), closed]),
                      Script([IDLE, deliver(1), IDLE]))
    assert lost.consumer.settled == [], "owed, then lost with the channel: the broker redelivers them"
    assert again.consumer.settled == [Settled("ack", 1, True)]


# --- connections ---


def test_run_returns_at_once_when_stopped_before_connecting(monkeypatch, caplog):
    loop = make_loop(Handler())
    calls = connections(monkeypatch, consume_loop, [], loop.stop)
    with caplog.at_level(logging.INFO):
        loop.run()
    assert len(calls) == 1 and calls[0][1] is loop._stopping and calls[0][2] == "svc"
    assert calls[0][0] is loop._broker
    assert "svc stopped consuming order-events" in caplog.text


def test_a_reconnect_tries_the_other_node_first(monkeypatch):
    """The loop keeps one NodeRotation across its connections: after losing node a, b comes first."""
    handler = Handler()
    loop = ConsumeLoop(BrokerSettings(host="a,b"), QUEUE, handler, "svc", SETTINGS)
    loop._stopping = FakeEvent()
    scripts = deque([Script([deliver(1), pika.exceptions.StreamLostError("Transport indicated EOF")]),
                     Script([deliver(2)])])
    tried: list[int] = []

    def open_declared(settings, node=0):
        assert settings is loop._broker
        tried.append(node)
        made = FakeBlockingConnection(scripts.popleft())
        made.on_exhausted = loop.stop
        return made

    monkeypatch.setattr(connection_module, "open_declared", open_declared)
    loop.run()
    assert tried == [0, 1], "the second connection begins with the node the first did not use"
    assert handler.calls == [[1], [2]]


def test_stop_finishes_the_batch_in_hand_and_cancels(monkeypatch):
    handler = Handler()
    loop = make_loop(handler)
    handler.behave = lambda batch: loop.stop() or []
    [connection] = run(loop, monkeypatch, Script([deliver(1), IDLE, deliver(2)]))
    assert handler.calls == [[1]]
    assert connection.consumer.settled == [Settled("ack", 1, True)]
    assert connection.consumer.cancelled == 1


def test_stop_while_idle(monkeypatch):
    handler = Handler()
    loop = make_loop(handler)
    [connection] = run(loop, monkeypatch, Script([IDLE, IDLE]))
    assert handler.calls == [] and connection.consumer.settled == []
    assert connection.consumer.cancelled == 1


def test_the_loop_is_consuming_from_consume_ok_until_the_connection_ends(monkeypatch):
    seen: list[bool] = []
    loop = make_loop(Handler(lambda batch: seen.append(loop.consuming) or []))
    run(loop, monkeypatch, Script([deliver(1)]))
    assert seen == [True] and loop.consuming is False


def test_a_lost_connection_is_reconnected_and_consumption_goes_on(monkeypatch, caplog):
    handler = Handler()
    loop = make_loop(handler)
    lost = pika.exceptions.StreamLostError("Transport indicated EOF")
    first, second = run(loop, monkeypatch, Script([deliver(1), IDLE, lost]), Script([deliver(1)]))
    assert handler.calls == [[1], [1]]
    assert first.closed == 1 and second.closed == 1
    assert "svc lost RabbitMQ" in caplog.text
    [wait] = loop._stopping.waits
    assert 0.08 <= wait <= 0.1


def test_the_backoff_is_reset_once_consuming_again(monkeypatch):
    lost = pika.exceptions.StreamLostError("Transport indicated EOF")
    loop = make_loop(Handler())
    run(loop, monkeypatch, Script([IDLE, lost]), Script([IDLE, lost]), Script([IDLE, lost]), Script([]))
    assert len(loop._stopping.waits) == 3
    assert all(0.08 <= w <= 0.1 for w in loop._stopping.waits), loop._stopping.waits


def test_a_channel_that_fails_before_consume_ok_does_not_reset_the_backoff(monkeypatch):
    """Fixed bug: the backoff was reset on every connect, so a queue that cannot be consumed (e.g.
    declared with other arguments, or exclusive elsewhere) was retried every 0.1 s for ever."""
    refused = pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED")
    loop = make_loop(Handler())
    lost = pika.exceptions.StreamLostError("Transport indicated EOF")
    run(loop, monkeypatch, *[Script(fail_before_consume_ok=refused)] * 4, Script([IDLE, lost]), Script([]))
    waits = loop._stopping.waits
    assert len(waits) == 5
    assert waits[0] < waits[1] < waits[2] < waits[3], f"the delays must grow: {waits}"
    assert 0.08 <= waits[4] <= 0.1, "consume-ok resets it"
    assert not loop.consuming


def test_an_unexpected_error_reconnects_after_a_pause(monkeypatch, caplog):
    handler = Handler()
    loop = make_loop(handler)
    broken = Script([deliver(1)], fail_on_qos=RuntimeError("surprise"))
    first, _ = run(loop, monkeypatch, broken, Script([deliver(1)]))
    assert "svc: unexpected error; reconnecting" in caplog.text
    assert handler.calls == [[1]] and first.closed == 1
    [wait] = loop._stopping.waits
    assert 0.08 <= wait <= 0.1


def test_a_connection_already_closed_is_not_closed_again(monkeypatch):
    lost = pika.exceptions.StreamLostError("Transport indicated EOF")
    connection = FakeBlockingConnection(Script([IDLE, lost]))
    connection.is_open = False
    loop = make_loop(Handler())
    run(loop, monkeypatch, connection, Script([]))
    assert connection.closed == 0


# --- state, logs and corners ---


def test_a_new_loop_is_not_consuming_and_stop_needs_no_connection(monkeypatch):
    loop = ConsumeLoop(BrokerSettings(), QUEUE, Handler(), "svc", SETTINGS)
    assert loop.consuming is False and loop.processed == 0
    loop.stop()
    calls = connections(monkeypatch, consume_loop, [FakeBlockingConnection()], loop.stop)
    loop.run()
    assert calls == [], "stopped before it started: no connection at all"


def test_what_the_loop_logs_about_its_connections(monkeypatch, caplog):
    loop = make_loop(Handler())
    lost = pika.exceptions.StreamLostError("Transport indicated EOF")
    with caplog.at_level(logging.INFO, logger="messaging.amqp.consume_loop"):
        run(loop, monkeypatch, Script([IDLE, lost]), Script([], fail_on_qos=RuntimeError("x")),
            Script([]))
    assert logged(caplog) == [
        "svc consuming order-events (prefetch 50)",
        "svc lost RabbitMQ (StreamLostError: ('Transport indicated EOF',)); reconnecting",
        "svc: unexpected error; reconnecting",
        "svc consuming order-events (prefetch 50)",
        "svc stopped consuming order-events",
    ]


def test_what_the_loop_logs_about_failures(monkeypatch, caplog):
    handler = failing_on(2, lambda: ValueError("boom"))
    loop = make_loop(handler)
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.consume_loop"):
        run(loop, monkeypatch, Script([deliver(1), deliver(2)]))
    assert logged(caplog) == [
        "svc: failed handling a batch of 2",
        "svc: batch of 2 keeps failing (ValueError('boom')); settling one message at a time",
        "svc: failed handling a batch of 1",
    ]
    assert all(record.exc_info for record in caplog.records if "failed handling" in record.getMessage())


def test_what_the_loop_logs_about_transient_failures(monkeypatch, caplog, store):
    failures = [locked()]

    def count(key):
        if failures:
            raise failures.pop()
        return store.count_redelivery(key)
    loop = make_loop(failing_on(1, locked, times=1), count_redelivery=count)
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.consume_loop"):
        run(loop, monkeypatch, Script([deliver(1, redelivered=True, message_id="m")]))
    assert logged(caplog) == [
        "svc: transient failure counting a redelivery of id:m (OperationalError('database is locked')), "
        "attempt 1/3, retrying in 0.20s",
        "svc: transient failure handling a batch of 1 (OperationalError('database is locked')), "
        "attempt 1/3, retrying in 0.20s",
    ]


def test_what_the_loop_logs_about_a_refused_dead_letter(monkeypatch, caplog):
    loop = make_loop(rejecting(1))
    connection = refusing_connection(Script([deliver(1)]), nacked())
    with caplog.at_level(logging.ERROR, logger="messaging.amqp.consume_loop"):
        run(loop, monkeypatch, connection)
    assert logged(caplog) == ["svc: 1 dead letter(s) refused by the broker; put back on order-events, "
                              "next try in 0.1s"]


def test_with_a_redelivery_limit_of_one_only_first_deliveries_are_handled(monkeypatch, store):
    handler = Handler()
    loop = make_loop(handler, ConsumerSettings(redelivery_limit=1), count_redelivery=store.count_redelivery)
    run(loop, monkeypatch, Script([deliver(1, message_id="a"), deliver(2, redelivered=True, message_id="b")]))
    assert handler.calls == [[1]]


def test_a_requeued_dead_letter_counts_as_a_first_delivery(monkeypatch, store):
    handler = rejecting(1, 2)
    loop = make_loop(handler, ConsumerSettings(redelivery_limit=1), count_redelivery=store.count_redelivery)
    connection = refusing_connection(Script([deliver(1, message_id="p"), IDLE,
                                             deliver(2, redelivered=True, message_id="p")]), nacked())
    run(loop, monkeypatch, connection)
    assert handler.calls == [[1], [2]], "handled again, not over the limit"


def test_the_error_text_of_a_rejection_keeps_the_notes_of_the_exception(monkeypatch):
    def boom():
        error = ValueError("boom")
        error.add_note("while reserving Burger")
        return error
    loop = make_loop(failing_on(1, boom))
    [connection] = run(loop, monkeypatch, Script([deliver(1)]))
    assert connection.dead_letters.published[0].properties.headers["x-dlq-error"] == \
        "ValueError: boom\nwhile reserving Burger"


# --- properties pika could not decode ---


def test_a_message_with_undecodable_properties_is_dead_lettered_and_the_rest_handled(monkeypatch):
    handler = Handler()
    loop = make_loop(handler)
    bad = decoded(properties_bytes(table(field(b"when", b"T", timestamp(2**63 + 5)),
                                         field(b"big", b"d", double(1e300))), b"bad-1"))
    method, _, _ = deliver(2)
    [connection] = run(loop, monkeypatch, Script([deliver(1), (method, bad, b'{"valid": "body"}'),
                                                  deliver(3)]))
    assert handler.calls == [[1, 3]], "the others are handled; the undecodable one never is"
    assert connection.consumer.settled == [Settled("ack", 3, True)]
    [letter] = connection.dead_letters.published
    headers = letter.properties.headers
    assert letter.body == b'{"valid": "body"}' and letter.properties.message_id == "bad-1"
    assert headers["x-dlq-reason"] == "undecodable-properties"
    assert headers["x-dlq-error"].startswith("header 'when': timestamp unreadable (")
    assert headers["when"] == f"unreadable timestamp 0x{timestamp(2**63 + 5).hex()}"
    assert headers["big"] == str(int(1e300)), "a value pika cannot write back is kept as text"
    assert headers["x-dlq-rewritten-headers"] == ["when", "big"]
    letter.properties.encode()  # pika can write the dead letter's properties
    assert loop.processed == 2


def test_a_body_over_max_message_bytes_is_dead_lettered_unhandled_and_the_rest_handled(monkeypatch):
    handler = Handler()
    settings = ConsumerSettings(prefetch=10, max_batch=10, max_message_bytes=1024)
    loop = make_loop(handler, settings)
    script = Script([deliver(1, b"x" * 1024), deliver(2, b"y" * 1025, message_id="big"), deliver(3)])
    [connection] = run(loop, monkeypatch, script)
    assert handler.calls == [[1, 3]], "a body of exactly the limit is handled; one byte more never is"
    assert connection.consumer.settled == [Settled("ack", 3, True)]
    [letter] = connection.dead_letters.published
    assert letter.body == b"y" * 1025, "the whole body is kept in the dead letter"
    assert letter.properties.headers["x-dlq-reason"] == "too-large"
    assert letter.properties.headers["x-dlq-error"] == "a body of 1025 bytes, over MAX_MESSAGE_BYTES (1024)"
    assert loop.processed == 2


# --- who published it ---


def checked_loop(handler: Handler, queue: topology.Queue = topology.ORDER_STATUS) -> ConsumeLoop:
    broker = BrokerSettings(user="order_service",
                            senders=(("order", "order_service"), ("inventory", "inventory_service")))
    loop = ConsumeLoop(broker, queue, handler, "svc", SETTINGS)
    loop._stopping = FakeEvent()
    return loop


def test_with_the_sender_check_on_only_the_entitled_user_is_handled(monkeypatch):
    handler = Handler()
    loop = checked_loop(handler)
    script = Script([deliver(1, user_id="inventory_service"), deliver(2, message_id="forged",
                                                                      user_id="order_service"),
                     deliver(3, message_id="anonymous"), deliver(4, user_id="inventory_service")])
    [connection] = run(loop, monkeypatch, script)
    assert handler.calls == [[1, 4]], "a result from anyone else never reaches the handler"
    assert connection.consumer.settled == [Settled("ack", 4, True)]
    letters = {p.properties.message_id: p for p in connection.dead_letters.published}
    assert {m: p.properties.headers["x-dlq-reason"] for m, p in letters.items()} == \
        {"forged": "unexpected-sender", "anonymous": "unexpected-sender"}
    assert letters["forged"].properties.headers["x-dlq-error"] == \
        "published by broker user 'order_service'; only 'inventory_service' may publish to this queue"
    assert letters["anonymous"].properties.headers["x-dlq-error"] == \
        "published without a user_id; only 'inventory_service' may publish to this queue"
    assert letters["forged"].properties.headers["x-original-user-id"] == "order_service"
    assert "x-original-user-id" not in letters["anonymous"].properties.headers
    assert {p.properties.user_id for p in letters.values()} == {"order_service"}, \
        "dead letters are published as the consumer's own user"


def test_each_queue_is_checked_against_its_own_sender(monkeypatch):
    handler = Handler()
    loop = checked_loop(handler, topology.ORDER_EVENTS)
    [connection] = run(loop, monkeypatch, Script([deliver(1, user_id="inventory_service"),
                                                  deliver(2, user_id="order_service")]))
    assert handler.calls == [[2]]
    assert [p.properties.headers["x-dlq-reason"] for p in connection.dead_letters.published] == \
        ["unexpected-sender"]


def test_without_a_user_for_the_queues_sender_every_publisher_is_believed(monkeypatch):
    handler = Handler()
    loop = ConsumeLoop(BrokerSettings(senders=(("order", "order_service"),)), topology.ORDER_STATUS,
                       handler, "svc", SETTINGS)
    loop._stopping = FakeEvent()
    [connection] = run(loop, monkeypatch, Script([deliver(1), deliver(2, user_id="anyone")]))
    assert handler.calls == [[1, 2]], "the spec's scripts publish plain JSON without a user_id"
    assert connection.dead_letters.published == []
