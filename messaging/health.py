"""A tiny JSON HTTP server for a consumer's /health (and any other read-only route)."""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

Route = Callable[[], tuple[int, Any]]


def serve(port: int, routes: dict[str, Route], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve `routes` (path -> (status, JSON body)) on a daemon thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            try:
                status, body = route() if route else (404, {"error": f"no route {self.path}"})
            except Exception as exc:
                logger.exception("route %s failed", self.path)
                status, body = 503, {"status": "unhealthy", "error": str(exc)}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("health: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
