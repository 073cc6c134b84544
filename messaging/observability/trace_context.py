"""W3C trace context: the `traceparent` that ties the log lines and spans of one order together.

A `POST /order` continues the trace its `traceparent` header names, or begins a new one; the
context then travels with the order's events (outbox row, AMQP header) through every service.
This module parses and makes those headers, and holds what the current thread is working on (the
trace, the order, the event) in a context variable that the log filter reads (`logs.py`).

Ids come from `random.getrandbits`, as OpenTelemetry's own id generator does: cheap, and reseeded
in every forked process. No OpenTelemetry SDK is needed for any of this (`tracing.py` adds spans).
"""
from __future__ import annotations

import random
import re
from contextvars import ContextVar, Token
from dataclasses import dataclass

HEADER = "traceparent"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One hop of a trace: the trace it belongs to, the span that is its parent, the sampled flag."""

    trace_id: str  # 32 lowercase hex digits, not all zero
    span_id: str  # 16 lowercase hex digits, not all zero
    flags: str = "01"  # 01: sampled

    def header(self) -> str:
        """The `traceparent` header value (version 00) for this context."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """A new span in the same trace, with this one as its parent."""
        return TraceContext(self.trace_id, _span_id(), self.flags)

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)


def parse(value: str | bytes | None) -> TraceContext | None:
    """The context a `traceparent` header names, or None when it is absent or invalid.

    Invalid: not `version-traceid-parentid-flags` in lowercase hex, version ff, an all-zero trace
    or parent id, or a version-00 header with anything after the flags. A later version may append
    fields, which are ignored (W3C Trace Context, "Versioning of traceparent").
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, flags)


def new_trace() -> TraceContext:
    """The first span of a new, sampled trace."""
    trace_id = random.getrandbits(128) or 1
    return TraceContext(f"{trace_id:032x}", _span_id())


def continue_or_start(header: str | bytes | None) -> TraceContext:
    """A child of the context `header` names, or a new trace when it names none."""
    parent = parse(header)
    return parent.child() if parent is not None else new_trace()


def header(context: TraceContext | None) -> str | None:
    """The `traceparent` value of `context`, or None."""
    return None if context is None else context.header()


def _span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


@dataclass(frozen=True, slots=True)
class Scope:
    """What a thread is working on, as far as it is known: read by the log filter."""

    trace: TraceContext | None = None
    order_id: str | None = None
    event_id: str | None = None


_EMPTY = Scope()
_current: ContextVar[Scope] = ContextVar("scope", default=_EMPTY)


def current() -> Scope:
    """The scope of the running thread (an empty one outside any request or message)."""
    return _current.get()


def enter(trace: TraceContext | None = None, order_id: str | None = None,
          event_id: str | None = None) -> Token:
    """Make this the current scope until `leave(token)`."""
    return _current.set(Scope(trace, order_id, event_id))


def update(order_id: str | None = None, event_id: str | None = None) -> None:
    """Add what became known (the order just created) to the current scope."""
    scope = _current.get()
    _current.set(Scope(scope.trace, order_id or scope.order_id, event_id or scope.event_id))


def leave(token: Token) -> None:
    """Restore the scope that was current before `enter`."""
    _current.reset(token)


class about:  # a context manager, named like contextlib's
    """`with about(trace, order_id, event_id):` log lines inside carry these fields."""

    __slots__ = ("_scope", "_token")

    def __init__(self, trace: TraceContext | None, order_id: str | None = None,
                 event_id: str | None = None) -> None:
        self._scope = Scope(trace, order_id, event_id)

    def __enter__(self) -> Scope:
        self._token = _current.set(self._scope)
        return self._scope

    def __exit__(self, *_exc: object) -> None:
        _current.reset(self._token)
