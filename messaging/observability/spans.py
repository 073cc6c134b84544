"""OpenTelemetry spans for one order's path: the HTTP request, each publish, each consumer's handling.

Spans are exported only when OTEL_TRACES_EXPORTER names an exporter (`console`, `otlp`, several
comma-separated) or OTEL_EXPORTER_OTLP_ENDPOINT is set (then `otlp`). Otherwise no SDK is loaded
and `start` only makes the next hop's ids (`trace_context`): the W3C context still travels in the
headers and the log lines, at the cost of one random number per hop. The service name is
OTEL_SERVICE_NAME, else the service's own; the batch processor reads the standard OTEL_BSP_*
variables and the OTLP exporter the standard OTEL_EXPORTER_OTLP_* ones (HTTP/protobuf only).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, Any, cast

from messaging.observability import logs
from messaging.observability.trace_context import HEADER, TraceContext, continue_or_start, parse
from messaging.settings import ConfigError

EXPORTERS = ("console", "otlp", "none")
SERVER, PRODUCER, CONSUMER = "SERVER", "PRODUCER", "CONSUMER"

_tracer: Any = None  # an OpenTelemetry Tracer once `configure` installed the SDK
_provider: Any = None


def exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters the environment asks for (empty: export nothing); ConfigError on a bad one."""
    raw = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return ()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ("otlp",) if endpoint else ()
    names = tuple(name.strip() for name in raw.split(","))
    for name in names:
        if name not in EXPORTERS:
            raise ConfigError(f"OTEL_TRACES_EXPORTER must be a comma-separated list of "
                              f"{', '.join(EXPORTERS)}, got {env.get('OTEL_TRACES_EXPORTER')!r}")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf")
    if "otlp" in names and protocol != "http/protobuf":
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf, got {protocol!r}")
    return tuple(name for name in names if name != "none")


def configure(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the OpenTelemetry SDK when the environment asks for spans; True if it did.

    Call once per process (in each gunicorn worker, after the fork: the exporter has a thread).
    """
    global _tracer, _provider
    env = os.environ if env is None else env
    names = exporters(env)
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service})
    _provider = TracerProvider(resource=resource)
    for name in names:
        if name == "console":  # one compact JSON object per line, never inside a log line
            # ConsoleSpanExporter only writes and flushes its `out`, which is all _LockedStdout has.
            exporter: SpanExporter = ConsoleSpanExporter(out=cast("IO[str]", _LockedStdout()),
                                           formatter=lambda span: span.to_json(indent=None) + "\n")
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        _provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = _provider.get_tracer("campus-food-ordering")
    return True


def shutdown() -> None:
    """Export what is left and stop the exporter (no-op without the SDK)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    """Tell whether spans are being recorded and exported."""
    return _tracer is not None


class Span:
    """A span in progress: `context` is what goes into the next hop's `traceparent`."""

    __slots__ = ("context", "_span")

    def __init__(self, context: TraceContext, span: Any = None) -> None:
        self.context, self._span = context, span

    def set(self, key: str, value: Any) -> None:
        """Add an attribute (when recording)."""
        if self._span is not None:
            self._span.set_attribute(key, value)

    def end(self, error: str | None = None) -> None:
        """Finish the span, marked as failed when `error` says why."""
        if self._span is not None:
            if error is not None:
                from opentelemetry.trace import Status, StatusCode

                self._span.set_status(Status(StatusCode.ERROR, error))
            self._span.end()


def start(name: str, kind: str, parent: str | bytes | None,
          attributes: dict[str, Any] | None = None) -> Span:
    """Start a span under the `traceparent` value `parent` (a new trace when it names none)."""
    if _tracer is None:
        return Span(continue_or_start(parent))
    from opentelemetry import trace

    remote, context = parse(parent), None
    if remote is not None:
        context = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
            int(remote.trace_id, 16), int(remote.span_id, 16), is_remote=True,
            trace_flags=trace.TraceFlags(int(remote.flags, 16)))))
    span = _tracer.start_span(name, context=context, kind=trace.SpanKind[kind],
                              attributes=attributes)
    own = span.get_span_context()
    return Span(TraceContext(f"{own.trace_id:032x}", f"{own.span_id:016x}",
                             f"{int(own.trace_flags):02x}"), span)


class _LockedStdout:
    """sys.stdout, written under the log handler's lock so span and log lines never interleave."""

    def write(self, text: str) -> int:
        lock = logs.output_lock()
        if lock is None:
            return sys.stdout.write(text)
        with lock:
            return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def publish_span(message: Any) -> Span:
    """A span for publishing an outbox message, child of the context stored with it."""
    return start(f"{message.exchange} publish", PRODUCER, message.traceparent, {
        "messaging.system": "rabbitmq", "messaging.operation.type": "publish",
        "messaging.destination.name": message.exchange,
        "messaging.rabbitmq.destination.routing_key": message.routing_key,
        "messaging.message.id": message.message_id,
        "messaging.message.conversation_id": message.correlation_id})


def consume_span(queue: str, properties: Any) -> Span:
    """A span for handling one delivery, child of the context its headers carry."""
    headers = properties.headers
    parent = headers.get(HEADER) if headers else None
    if _tracer is None:
        return Span(continue_or_start(parent))
    return start(f"{queue} process", CONSUMER, parent, {
        "messaging.system": "rabbitmq", "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": properties.message_id or "",
        "messaging.message.conversation_id": properties.correlation_id or ""})
