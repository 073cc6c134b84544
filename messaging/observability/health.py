"""The /health answer every service gives, and a tiny HTTP server for a consumer's /health,
/metrics and any other read-only route.

A route answers (status, body): a body is sent as JSON, or as it is when it is a `Text`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from messaging.observability import metrics

logger = logging.getLogger(__name__)

Route = Callable[[], tuple[int, Any]]

# On every response of every service: JSON and metrics are data, never a document to render, sniff
# or frame (OrderService's page sends its own, wider, policy).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# How long a connection may take to send its request (or its next one): an idle or trickling client
# holds one of the server's threads for at most this long.
REQUEST_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Text:
    """A body sent as it is, not as JSON (the Prometheus text format, say)."""

    body: bytes
    content_type: str


def report(service: str, healthy: bool, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A /health answer: 200 and "healthy", or 503 and "unhealthy", the service's name, its fields."""
    status = "healthy" if healthy else "unhealthy"
    return (200 if healthy else 503), {"status": status, "service": service, **fields}


def serve(port: int, routes: dict[str, Route], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve `routes` (path -> (status, body)) on a daemon thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_SECONDS

        def end_headers(self) -> None:  # every answer, the error pages BaseHTTPRequestHandler makes too
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            super().end_headers()

        def do_GET(self) -> None:
            started = time.perf_counter()
            path = self.path.split("?", 1)[0]
            route = routes.get(path)
            try:
                status, body = route() if route else (404, {"error": f"no route {self.path}"})
            except Exception as exc:
                logger.exception("route %s failed", self.path)
                status, body = 503, {"status": "unhealthy", "error": str(exc)}
            if isinstance(body, Text):
                payload, content_type = body.body, body.content_type
            else:
                payload, content_type = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            metrics.http_request("GET", path if route else None, status,
                                 time.perf_counter() - started)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("health: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
