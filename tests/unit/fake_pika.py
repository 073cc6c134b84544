"""Stand-ins for the parts of pika the messaging core talks to, driven by the test (no broker).

For the relay: `FakeSelectConnection` with its `FakeIOLoop` (timers run on a virtual clock) and a
`ConfirmChannel` that records every basic_publish and lets the test answer with Basic.Ack and
Basic.Nack frames (one tag, or every tag up to it) and basic.return callbacks, as the broker would.

For the consume loop: `FakeBlockingConnection` and `FakeBlockingChannel`, whose `consume()` yields the
deliveries the test scripted (bursts separated by inactivity), and which record basic_ack,
basic_nack, basic_reject and basic_publish; a publish can be made to raise NackError or UnroutableError.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec


class FakeEvent:
    """A threading.Event whose wait() returns at once and remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self._set = False
        self.waits: list[float | None] = []
        self.on_wait: Callable[[float | None], None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.on_wait is not None:
            self.on_wait(timeout)
        return self._set


class FakeClock:
    """Stands in for the `time` module of the code under test: time() and monotonic() move on command."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the relay's side: SelectConnection, ioloop, channel in confirm mode ---


@dataclass
class Timer:
    due: float
    delay: float
    callback: Callable[[], None]
    seq: int
    cancelled: bool = False


class FakeIOLoop:
    """pika's ioloop as far as the relay uses it; timers run only when the test advances the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []
        self.callbacks: list[Callable[[], None]] = []
        self.closed = False  # add_callback_threadsafe raises OSError once the loop is gone
        self.started = self.stopped = 0
        self.on_start: Callable[[], None] | None = None
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, delay, callback, next(self._seq))
        self.timers.append(timer)
        return timer

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        if self.closed:
            raise OSError("the ioloop's wake-up socket is closed")
        self.callbacks.append(callback)

    def start(self) -> None:
        self.started += 1
        if self.on_start is not None:
            self.on_start()

    def stop(self) -> None:
        self.stopped += 1

    @property
    def delays(self) -> list[float]:
        """The delays of the timers still waiting, in the order they were set."""
        return [t.delay for t in self.timers]

    def run_callbacks(self) -> int:
        """Run what other threads asked to run on the loop; return how many ran."""
        ran = 0
        while self.callbacks:
            self.callbacks.pop(0)()
            ran += 1
        return ran

    def advance(self, seconds: float) -> None:
        """Move the loop's clock on, running every timer that falls due, in order."""
        until = self.now + seconds
        while True:
            due = [t for t in self.timers if t.due <= until]
            if not due:
                break
            timer = min(due, key=lambda t: (t.due, t.seq))
            self.timers.remove(timer)
            self.now = max(self.now, timer.due)
            timer.callback()
        self.now = until


@dataclass
class Published:
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool

    @property
    def message_id(self) -> str:
        return self.properties.message_id


def frame(method: Any) -> pika.frame.Method:
    return pika.frame.Method(1, method)


class ConfirmChannel:
    """A SelectConnection channel: records publishes; the test plays the broker's answers."""

    def __init__(self, connection: FakeSelectConnection) -> None:
        self.connection = connection
        self.is_open = True
        self.published: list[Published] = []
        self.close_callbacks: list[Callable] = []
        self.return_callbacks: list[Callable] = []
        self.ack_nack_callback: Callable | None = None
        self.confirm_callback: Callable | None = None

    # what the relay calls
    def add_on_close_callback(self, callback: Callable) -> None:
        self.close_callbacks.append(callback)

    def add_on_return_callback(self, callback: Callable) -> None:
        self.return_callbacks.append(callback)

    def confirm_delivery(self, ack_nack_callback: Callable, callback: Callable | None = None) -> None:
        self.ack_nack_callback, self.confirm_callback = ack_nack_callback, callback

    def basic_publish(self, exchange: str, routing_key: str, body: bytes,
                      properties: pika.BasicProperties | None = None, mandatory: bool = False) -> None:
        if not self.is_open:
            raise pika.exceptions.ChannelWrongStateError("Channel is closed.")
        self.published.append(Published(exchange, routing_key, body, properties, mandatory))

    # what the broker does
    def confirm_ok(self) -> None:
        """Confirm.SelectOk: confirms are on; delivery tags count from 1."""
        self.confirm_callback(frame(pika.spec.Confirm.SelectOk()))

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.ack_nack_callback(frame(pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple)))

    def nack(self, tag: int, multiple: bool = False) -> None:
        self.ack_nack_callback(frame(pika.spec.Basic.Nack(delivery_tag=tag, multiple=multiple)))

    def return_(self, tag: int) -> None:
        """basic.return of the message published with delivery tag `tag` (1-based)."""
        message = self.published[tag - 1]
        method = pika.spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE",
                                        exchange=message.exchange, routing_key=message.routing_key)
        for callback in self.return_callbacks:
            callback(self, method, message.properties, message.body)

    def close_by_broker(self, code: int = 406, text: str = "PRECONDITION_FAILED") -> None:
        self.is_open = False
        for callback in self.close_callbacks:
            callback(self, pika.exceptions.ChannelClosedByBroker(code, text))

    @property
    def message_ids(self) -> list[str]:
        return [p.message_id for p in self.published]


class FakeSelectConnection:
    """pika.SelectConnection: opening, channels and closing happen when the test says so."""

    def __init__(self, parameters: Any = None, on_open_callback: Callable | None = None,
                 on_open_error_callback: Callable | None = None,
                 on_close_callback: Callable | None = None) -> None:
        self.parameters = parameters
        self._on_open, self._on_open_error, self._on_close = (on_open_callback, on_open_error_callback,
                                                              on_close_callback)
        self.ioloop = FakeIOLoop()
        self.is_open = self.is_closing = False
        self.channels: list[ConfirmChannel] = []
        self.close_calls = 0
        self.async_close = False  # True: close() only starts closing, as a real one does

    @property
    def channel_(self) -> ConfirmChannel:
        return self.channels[-1]

    def open(self) -> None:
        self.is_open = True
        self._on_open(self)

    def fail_to_open(self, error: BaseException | None = None) -> None:
        self._on_open_error(self, error or pika.exceptions.AMQPConnectionError("refused"))

    def channel(self, on_open_callback: Callable) -> ConfirmChannel:
        channel = ConfirmChannel(self)
        self.channels.append(channel)
        on_open_callback(channel)
        return channel

    def close(self) -> None:
        """Closing by the client: the channels close, then on_close_callback, as in pika."""
        self.close_calls += 1
        self.is_closing, self.is_open = True, False
        if self.async_close:
            return
        self._lose(pika.exceptions.ConnectionClosedByClient(200, "Normal shutdown"))

    def drop(self) -> None:
        """The broker or the network goes away."""
        self._lose(pika.exceptions.StreamLostError("Transport indicated EOF"))

    def _lose(self, reason: BaseException) -> None:
        self.is_open = False
        self.ioloop.closed = True
        for channel in self.channels:
            if channel.is_open:
                channel.is_open = False
                for callback in channel.close_callbacks:
                    callback(channel, reason)
        self.is_closing = False
        self._on_close(self, reason)


class Probe:
    """The BlockingConnection `connect()` returns (the relay only closes it)."""

    def __init__(self) -> None:
        self.is_open, self.closed = True, 0

    def close(self) -> None:
        self.is_open, self.closed = False, self.closed + 1


# --- the consume loop's side: BlockingConnection and BlockingChannel ---


def deliver(tag: int, body: bytes = b"{}", redelivered: bool = False, message_id: str | None = None,
            headers: dict | None = None, exchange: str = "orders",
            routing_key: str = "order.placed", **properties: Any) -> tuple:
    """One (method, properties, body) as BlockingChannel.consume() yields it."""
    method = pika.spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=tag, redelivered=redelivered,
                                     exchange=exchange, routing_key=routing_key)
    return method, pika.BasicProperties(message_id=message_id, headers=headers, **properties), body


IDLE = (None, None, None)  # what consume() yields after inactivity_timeout with nothing to deliver


@dataclass
class Settled:
    """One basic_ack / basic_nack / basic_reject, in the order they were sent."""

    kind: str
    tag: int
    multiple: bool = False
    requeue: bool | None = None


@dataclass
class Script:
    """What one connection's consume() does: yield these items (a tuple from `deliver`, IDLE, or an
    exception to raise), after failing before consume-ok when `fail_before_consume_ok` is given."""

    items: list = field(default_factory=list)
    fail_before_consume_ok: BaseException | None = None
    fail_on_qos: BaseException | None = None


class FakeBlockingChannel:
    def __init__(self, connection: FakeBlockingConnection, script: Script | None = None) -> None:
        self.connection = connection
        self.script = script
        self.is_open = True
        self.qos: int | None = None
        self.confirming = False
        self.cancelled = 0
        self.settled: list[Settled] = []
        self.published: list[Published] = []
        self.publish_errors: deque[BaseException | None] = deque()
        self._pending: deque = deque()
        self.consumed: list[tuple[str, float | None]] = []

    def basic_qos(self, prefetch_count: int = 0) -> None:
        if self.script is not None and self.script.fail_on_qos is not None:
            raise self.script.fail_on_qos
        self.qos = prefetch_count

    def confirm_delivery(self) -> None:
        self.confirming = True

    def consume(self, queue: str, inactivity_timeout: float | None = None) -> Iterator[tuple]:
        self.consumed.append((queue, inactivity_timeout))
        script = self.script or Script()
        if script.fail_before_consume_ok is not None:
            raise script.fail_before_consume_ok
        self._pending = deque(script.items)
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, BaseException):
                raise item
            yield item
        # the script is over: the loop is told to stop and sees one more idle pass
        self.connection.on_exhausted()
        yield IDLE

    def get_waiting_message_count(self) -> int:
        """Deliveries ready right behind the current one (up to the next idle gap or failure)."""
        count = 0
        for item in self._pending:
            if not isinstance(item, tuple) or item[0] is None:
                break
            count += 1
        return count

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self.settled.append(Settled("ack", delivery_tag, multiple))

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True) -> None:
        self.settled.append(Settled("nack", delivery_tag, multiple, requeue))

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self.settled.append(Settled("reject", delivery_tag, False, requeue))

    def basic_publish(self, exchange: str, routing_key: str, body: bytes,
                      properties: pika.BasicProperties | None = None, mandatory: bool = False) -> None:
        self.published.append(Published(exchange, routing_key, body, properties, mandatory))
        error = self.publish_errors.popleft() if self.publish_errors else None
        if error is not None:
            raise error

    def refuse_next(self, *errors: BaseException | None) -> None:
        """Make the next publishes raise these (None: that one is confirmed)."""
        self.publish_errors.extend(errors)

    def cancel(self) -> None:
        self.cancelled += 1


def nacked() -> pika.exceptions.NackError:
    return pika.exceptions.NackError([])


def unroutable() -> pika.exceptions.UnroutableError:
    return pika.exceptions.UnroutableError([])


class FakeBlockingConnection:
    """A BlockingConnection whose first channel consumes `script` and second publishes dead letters."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.channels: list[FakeBlockingChannel] = []
        self.sleeps: list[float] = []
        self.is_open = True
        self.closed = 0
        self.on_exhausted: Callable[[], None] = lambda: None

    def channel(self) -> FakeBlockingChannel:
        channel = FakeBlockingChannel(self, self.script if not self.channels else None)
        self.channels.append(channel)
        return channel

    @property
    def consumer(self) -> FakeBlockingChannel:
        return self.channels[0]

    @property
    def dead_letters(self) -> FakeBlockingChannel:
        return self.channels[1]

    def sleep(self, duration: float) -> None:
        self.sleeps.append(duration)

    def close(self) -> None:
        self.is_open = False
        self.closed += 1


def connections(monkeypatch, module, items: Iterable[Any], stop: Callable[[], None]) -> list:
    """Make `module.connect` hand out `items` one per call, then None (as when stopping).

    Each connection whose script runs out calls `stop`. Returns the list of connect() calls' args.
    """
    queue = deque(items)
    calls: list = []

    def connect(broker, stopping, name, nodes=None):
        calls.append((broker, stopping, name))
        if not queue:
            return None
        connection = queue.popleft()
        if isinstance(connection, FakeBlockingConnection):
            connection.on_exhausted = stop
        return connection

    monkeypatch.setattr(module, "connect", connect)
    return calls
