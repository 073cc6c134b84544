"""W3C traceparent parsing and generation, and the scope the log filter reads."""
from __future__ import annotations

import pytest

from messaging.observability import trace_context
from messaging.observability.trace_context import TraceContext, continue_or_start, new_trace, parse

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_header_names_its_trace_parent_and_flags():
    assert parse(VALID) == TraceContext(TRACE, SPAN, "01")
    assert parse(f"00-{TRACE}-{SPAN}-00").sampled is False
    assert parse(VALID.encode()) == TraceContext(TRACE, SPAN, "01"), "pika may hand over bytes"
    assert parse(f" {VALID}\t") == TraceContext(TRACE, SPAN, "01"), "surrounding blanks"


def test_a_later_version_may_append_fields():
    assert parse(f"cc-{TRACE}-{SPAN}-01-what-comes-later") == TraceContext(TRACE, SPAN, "01")
    assert parse(f"cc-{TRACE}-{SPAN}-01") == TraceContext(TRACE, SPAN, "01")


@pytest.mark.parametrize("header", [
    None, "", "garbage", 42, b"\xff\xfe",
    f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
    f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"00-{TRACE.upper()}-{SPAN}-01",  # uppercase hex
    f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
    f"00-{TRACE[:-1]}-{SPAN}-01", f"00-{TRACE}-{SPAN}0-01", f"00-{TRACE}-{SPAN}-1",
    f"0-{TRACE}-{SPAN}-01", f"00_{TRACE}_{SPAN}_01", f"00-{TRACE}-{SPAN}-0g",
    f"cc-{TRACE}-{SPAN}-01x",  # a later version's extra fields start with a dash
])
def test_an_invalid_header_names_no_context(header):
    assert parse(header) is None


def test_a_new_trace_is_valid_sampled_and_different_each_time():
    first, second = new_trace(), new_trace()
    assert parse(first.header()) == first and first.sampled
    assert len(first.trace_id) == 32 and len(first.span_id) == 16
    assert first.trace_id != second.trace_id and first.span_id != second.span_id


def test_a_child_keeps_the_trace_and_flags_with_a_span_of_its_own():
    parent = TraceContext(TRACE, SPAN, "00")
    child = parent.child()
    assert (child.trace_id, child.flags) == (TRACE, "00") and child.span_id != SPAN
    assert parse(child.header()) == child


def test_continue_or_start():
    assert continue_or_start(VALID).trace_id == TRACE
    assert continue_or_start(VALID).span_id != SPAN
    assert continue_or_start(f"ff-{TRACE}-{SPAN}-01").trace_id != TRACE
    assert continue_or_start(None).trace_id != continue_or_start(None).trace_id


def test_the_scope_is_entered_updated_and_left():
    assert trace_context.current() == trace_context.Scope()
    token = trace_context.enter(TraceContext(TRACE, SPAN))
    trace_context.update(order_id="o1", event_id="e1")
    assert trace_context.current() == trace_context.Scope(TraceContext(TRACE, SPAN), "o1", "e1")
    with trace_context.about(None, "o2"):
        assert trace_context.current() == trace_context.Scope(None, "o2", None)
    assert trace_context.current().order_id == "o1"
    trace_context.leave(token)
    assert trace_context.current() == trace_context.Scope()
