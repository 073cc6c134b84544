"""LOG_FORMAT: text (anything unprintable escaped), or one JSON object per line with the order's scope."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from messaging.observability import logs, trace_context
from messaging.observability.trace_context import TraceContext
from messaging.settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SCRIPT = """
import logging
from messaging.observability import logs, trace_context
from messaging.observability.trace_context import TraceContext
logs.configure("test-service")
log = logging.getLogger("some.module")
log.info("before any order")
with trace_context.about(TraceContext("TRACE", "SPAN"), "order-1", "event-1"):
    log.warning("about the order: %d", 7)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it broke")
log.info("Order accepted: user=%s item=%s", "u1\\n2026-12-04 INFO forged: Order reserved",
         "\\x1b[2J\\u202eBurger")
""".replace("TRACE", TRACE).replace("SPAN", SPAN)


def run(log_format: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    if log_format is not None:
        env["LOG_FORMAT"] = log_format
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)


def test_json_lines_carry_the_fields_and_the_scope():
    result = run("json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 4, result.stdout  # one line each, the traceback inside its record
    first, about, broken, forged = records
    assert set(first) == {"timestamp", "level", "service", "logger", "message"}
    assert (first["level"], first["service"], first["logger"], first["message"]) == \
        ("INFO", "test-service", "some.module", "before any order")
    assert first["timestamp"].startswith("20") and first["timestamp"].endswith("+00:00")
    assert about == {**about, "level": "WARNING", "message": "about the order: 7",
                     "order_id": "order-1", "event_id": "event-1", "trace_id": TRACE,
                     "span_id": SPAN}
    assert "ZeroDivisionError" in broken["exc_info"] and "order_id" not in broken
    assert forged["message"] == ("Order accepted: user=u1\n2026-12-04 INFO forged: Order reserved "
                                 "item=\x1b[2J\u202eBurger"), "JSON escapes the line breaks: one record"


def test_text_is_the_default_and_unchanged():
    for value in (None, "text", "TEXT"):
        result = run(value)
        lines = result.stdout.splitlines()
        assert len(lines) >= 3 and " INFO some.module: before any order" in lines[0]
        assert lines[1].endswith(" WARNING some.module: about the order: 7"), "no fields added"


def test_text_lines_escape_what_would_forge_or_disguise_a_line_and_tracebacks_keep_theirs():
    lines = run("text").stdout.splitlines()
    assert lines[2].endswith(" ERROR some.module: it broke")
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1].endswith(" INFO some.module: Order accepted: user=u1\\n2026-12-04 INFO forged: Order "
                              "reserved item=\\x1b[2J\\u202eBurger"), "one line, escaped"
    assert not any(line.startswith("2026-12-04 INFO forged") for line in lines)


@pytest.mark.parametrize(("text", "written"), [
    ("plain text, caf\u00e9 \u5bff\u53f8", "plain text, caf\u00e9 \u5bff\u53f8"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"), ("\x1b[31m", "\\x1b[31m"), ("x\u2028y\u202e", "x\\u2028y\\u202e"),
    ("\U000e0001", "\\U000e0001"), ("\\n stays as typed", "\\n stays as typed"),
])
def test_escaped_writes_every_unprintable_character_as_its_escape(text, written):
    assert logs.escaped(text) == written


def test_a_bad_log_format_is_a_configuration_error():
    assert logs.log_format({"LOG_FORMAT": "json"}) == "json"
    with pytest.raises(ConfigError, match="LOG_FORMAT must be one of TEXT, JSON, got 'xml'"):
        logs.log_format({"LOG_FORMAT": "xml"})


def test_a_service_with_a_bad_log_format_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "LOG_FORMAT": "xml", "DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "notification_service"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("notification-service: configuration error: LOG_FORMAT must "
                                     "be one of TEXT, JSON, got 'xml'")


def test_the_filter_leaves_fields_a_call_passed_itself():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    record.order_id = "given"
    with trace_context.about(TraceContext(TRACE, SPAN), "scoped", "event-9"):
        logs.ScopeFilter().filter(record)
    body = json.loads(logs.json_formatter("svc").format(record))
    assert (body["order_id"], body["event_id"], body["trace_id"]) == ("given", "event-9", TRACE)
