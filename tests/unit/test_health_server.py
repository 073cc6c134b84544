"""The consumer services' small HTTP server: security headers on every answer, idle clients let go."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from messaging.observability import health
from stack.processes import free_port

EXPECTED = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cross-Origin-Opener-Policy": "same-origin"}


def broken() -> tuple[int, dict]:
    raise RuntimeError("store gone")


@pytest.fixture
def base(monkeypatch) -> Iterator[str]:
    monkeypatch.setattr(health, "REQUEST_TIMEOUT_SECONDS", 0.5)
    port = free_port()
    server = health.serve(port, {"/health": lambda: (200, {"status": "healthy"}), "/broken": broken,
                                 "/text": lambda: (200, health.Text(b"<b>x</b>", "text/plain"))},
                          host="127.0.0.1")
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/health", 200), ("GET", "/text", 200), ("GET", "/nope?<script>", 404),
    ("GET", "/broken", 503), ("POST", "/health", 501), ("DELETE", "/health", 501),
])
def test_every_answer_carries_the_security_headers(base, method, path, status):
    response = requests.request(method, f"{base}{path}", timeout=5)
    assert response.status_code == status
    assert {name: response.headers.get(name) for name in EXPECTED} == EXPECTED


def test_a_client_that_connects_and_sends_nothing_is_let_go_and_others_are_served(base):
    host, port = base.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(3)]
    trickling = socket.create_connection((host, int(port)), timeout=5)
    trickling.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    try:
        assert requests.get(f"{base}/health", timeout=5).status_code == 200, "served meanwhile"
        started = time.monotonic()
        for sock in [*idle, trickling]:
            assert sock.recv(1024) == b"", "the server closed the connection"  # recv waits up to 5 s
        assert time.monotonic() - started < 4, "within about the request timeout, not the client's"
    finally:
        for sock in [*idle, trickling]:
            sock.close()
