"""Logging set-up for a service's __main__: one line per record on stdout, pika kept quiet.

LOG_FORMAT=text (the default) writes `time LEVEL logger: message`, with anything unprintable in it
escaped. LOG_FORMAT=json writes each
record as one JSON object (python-json-logger) with `timestamp`, `level`, `service`, `logger`,
`message` and, where known, `order_id`, `event_id`, `trace_id` and `span_id`: those come from the
scope of the request or message being handled (`trace_context`), so no log call has to pass them.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager

from pythonjsonlogger.json import JsonFormatter

from messaging.observability import trace_context
from messaging.settings import env_choice

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("TEXT", "JSON")

_json: JsonFormatter | None = None  # set in json mode, for handlers made later (gunicorn's)
_scope_filter: ScopeFilter | None = None


class TextFormatter(logging.Formatter):
    """LOG_FORMAT=text: every character of a record's line that a terminal or a log reader would act on
    (newlines, escape sequences, bidirectional overrides, ...) is written escaped, as `\\n` or `\\u202e`,
    so text that came from a client or a publisher cannot forge or disguise a line. A traceback,
    which the formatter appends itself, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escaped(super().formatMessage(record))


def escaped(text: str) -> str:
    """`text` with every unprintable character written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                   for char in text)


class ScopeFilter(logging.Filter):
    """Add the current scope's order_id, event_id, trace_id and span_id to each record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = trace_context.current()
        if scope.order_id is not None and not hasattr(record, "order_id"):
            record.order_id = scope.order_id
        if scope.event_id is not None and not hasattr(record, "event_id"):
            record.event_id = scope.event_id
        if scope.trace is not None and not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = scope.trace.trace_id, scope.trace.span_id
        return True


def json_formatter(service: str) -> JsonFormatter:
    """The formatter of LOG_FORMAT=json: one JSON object per record, UTC ISO-8601 timestamps."""
    return JsonFormatter("{levelname}{name}{message}", style="{", timestamp=True,
                         rename_fields={"levelname": "level", "name": "logger"},
                         static_fields={"service": service}, json_ensure_ascii=False)


def log_format(env: Mapping[str, str] | None = None) -> str:
    """LOG_FORMAT, `text` or `json`; raises ConfigError for anything else."""
    return env_choice(os.environ if env is None else env, "LOG_FORMAT", "TEXT", LOG_FORMATS).lower()


def configure(service: str = "service") -> None:
    """Log at LOG_LEVEL (default INFO) to stdout in LOG_FORMAT; raises ConfigError on a bad value.

    pika's own connection-failure records are silenced: our reconnect loops log each failure once,
    with the delay before the next attempt.
    """
    global _json, _scope_filter
    level = env_choice(os.environ, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
    fmt = log_format()
    logging.basicConfig(level=level, stream=sys.stdout, format=TEXT_FORMAT)
    logging.getLogger("pika").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)
    if fmt == "text":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(TextFormatter(TEXT_FORMAT))
    if fmt == "json":
        _json, _scope_filter = json_formatter(service), ScopeFilter()
        for handler in logging.getLogger().handlers:
            use_json(handler)


def use_json(handler: logging.Handler) -> None:
    """Give `handler` the JSON format and the scope fields, when LOG_FORMAT=json (else nothing)."""
    if _json is None or _scope_filter is None:
        return
    handler.setFormatter(_json)
    if _scope_filter not in handler.filters:
        handler.addFilter(_scope_filter)


def output_lock() -> AbstractContextManager[object] | None:
    """The lock that keeps other writers (the console span exporter) from splitting a log line."""
    handlers = logging.getLogger().handlers
    return handlers[0].lock if handlers else None
