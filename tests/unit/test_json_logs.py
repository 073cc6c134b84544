"""LOG_FORMAT: text as it always was, or one JSON object per line with the order's scope."""
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
    assert len(records) == 3, result.stdout  # one line each, the traceback inside its record
    first, about, broken = records
    assert set(first) == {"timestamp", "level", "service", "logger", "message"}
    assert (first["level"], first["service"], first["logger"], first["message"]) == \
        ("INFO", "test-service", "some.module", "before any order")
    assert first["timestamp"].startswith("20") and first["timestamp"].endswith("+00:00")
    assert about == {**about, "level": "WARNING", "message": "about the order: 7",
                     "order_id": "order-1", "event_id": "event-1", "trace_id": TRACE,
                     "span_id": SPAN}
    assert "ZeroDivisionError" in broken["exc_info"] and "order_id" not in broken


def test_text_is_the_default_and_unchanged():
    for value in (None, "text", "TEXT"):
        result = run(value)
        lines = result.stdout.splitlines()
        assert len(lines) >= 3 and " INFO some.module: before any order" in lines[0]
        assert lines[1].endswith(" WARNING some.module: about the order: 7"), "no fields added"


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
