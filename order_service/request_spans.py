"""One span, and one log scope, per HTTP request: the first hop of an order's trace.

A request that carries a valid W3C `traceparent` header continues that trace; any other begins a
new one. The OrderPlaced event of a `POST /order` is stored with this request's context, so the
trace goes on through the relay and the other services (`messaging.observability.trace_context`).
"""
from __future__ import annotations

from flask import Flask, Response, g, request

from messaging.observability import spans, trace_context

UNTRACED = ("/health", "/metrics", "/orders/board")  # polled and scraped: a span each would bury
# the orders (every open page polls the board twice a second)


def install(app: Flask) -> None:
    """Open a span and a log scope before each request; close them after its response."""

    @app.before_request
    def begin() -> None:
        if request.path in UNTRACED:
            return
        route = request.url_rule.rule if request.url_rule is not None else None
        span = spans.start(f"{request.method} {route}" if route else request.method,
                           spans.SERVER, request.headers.get(trace_context.HEADER),
                           {"http.request.method": request.method, "url.path": request.path,
                            **({"http.route": route} if route else {})})
        g.trace_span, g.trace_token = span, trace_context.enter(span.context)

    @app.after_request
    def status(response: Response) -> Response:
        span = g.get("trace_span")
        if span is not None:
            span.set("http.response.status_code", response.status_code)
            g.trace_error = str(response.status_code) if response.status_code >= 500 else None
        return response

    @app.teardown_request
    def end(exc: BaseException | None) -> None:
        span = g.pop("trace_span", None)
        if span is None:
            return
        span.end(repr(exc) if exc is not None else g.pop("trace_error", None))
        trace_context.leave(g.pop("trace_token"))


def current_traceparent() -> str | None:
    """The `traceparent` an event published by the running request should carry."""
    return trace_context.header(trace_context.current().trace)
