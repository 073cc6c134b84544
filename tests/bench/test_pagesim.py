"""bench.pagesim against a stub server: the simulated pages ask what page.js asks, in that order."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import pagesim


class Board(BaseHTTPRequestHandler):
    """Answers the board with ETag "v1" (304 when asked with it) and anything else with 200."""

    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers
    asked: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # the name http.server calls
        tag = self.headers.get("If-None-Match")
        self.asked.append((self.path, tag))
        unchanged = self.path == pagesim.BOARD and tag == '"v1"'
        self.send_response(304 if unchanged else 200)
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", "0" if unchanged else "2")
        self.end_headers()
        if not unchanged:
            self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    Board.asked = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Board)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def test_each_page_loads_its_files_then_polls_the_board_with_the_last_etag(server):
    results: queue.Queue = queue.Queue()
    pagesim.simulate_pages(f"http://127.0.0.1:{server.server_port}", 2, 2.0, results)
    summary = results.get(timeout=1)
    files = [path for path, _ in Board.asked if path != pagesim.BOARD]
    polls = [tag for path, tag in Board.asked if path == pagesim.BOARD]
    assert sorted(files) == sorted(pagesim.FILES * 2)
    assert polls.count(None) == 2, "each page's first poll has no ETag yet"
    assert len(polls) >= 4 and set(polls) == {None, '"v1"'}
    assert summary["answers"] == {"200": 2, "304": len(polls) - 2}
