"""The order page's routes through Flask's test client: headers, static files, the polled board."""
from __future__ import annotations

import re
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from inventory_service.config import DEFAULT_MENU
from messaging.events import utc_now
from order_service import config
from order_service.app import create_app
from order_service.store import OrderStore
from tests.unit import factories


class Relay:
    connected = True

    def claimant(self) -> None:
        return None

    def hand_over(self, rows: list) -> None:
        pass


@pytest.fixture
def relay() -> Relay:
    return Relay()


@pytest.fixture
def client(order_store: OrderStore, relay: Relay) -> FlaskClient:
    return create_app(config.Settings(), order_store, relay).test_client()


def place(client: FlaskClient, user: str = "ann", item: str = "Burger") -> str:
    response = client.post("/order", json={"user_id": user, "item": item, "quantity": 1})
    assert response.status_code == 202
    return response.get_json()["order_id"]


def finish(store: OrderStore, order_id: str, status: str, reason: str | None = None) -> None:
    assert store.write(lambda conn: factories.finish(store, conn, order_id, status, reason,
                                                     utc_now())) == (
        "updated")


class Page(HTMLParser):
    """What of index.html matters to its Content-Security-Policy."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self.options: list[str] = []
        self._open: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag
        if tag == "option":
            self.options.append(dict(attrs)["value"] or "")

    def handle_data(self, data: str) -> None:
        if self._open in ("script", "style") and data.strip():
            self.inline.append(data)


# --- the page and its files ---

def test_the_page_comes_with_a_strict_content_security_policy(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = dict(part.split(" ", 1) for part in response.headers["Content-Security-Policy"].split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_has_nothing_inline_and_every_file_it_names_is_served(client):
    page = Page(client.get("/").get_data(as_text=True))
    assert page.inline == [], "no inline script or style"
    assert not [tag for tag, attrs in page.tags if tag == "style" or "style" in attrs
                or any(name.startswith("on") for name in attrs)]
    files = [attrs.get("src") or attrs.get("href") for tag, attrs in page.tags
             if tag in ("script", "link")]
    assert len(files) == 3 and all(path.startswith("/static/") for path in files)
    for path in files:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Content-Security-Policy" in response.headers


def test_the_item_field_suggests_the_default_menu(client):
    assert tuple(Page(client.get("/").get_data(as_text=True)).options) == DEFAULT_MENU


# --- GET /orders/board ---

def test_the_board_shows_the_newest_orders_counts_broker_and_backlog(client, order_store):
    first, second = place(client), place(client, "bob", "Unicorn")
    finish(order_store, second, "failed", "Unicorn is not on the menu")
    body = client.get("/orders/board").get_json()
    assert [order["order_id"] for order in body["orders"]] == [second, first]
    assert body["orders"][0]["reason"] == "Unicorn is not on the menu"
    assert body["counts"] == {"accepted": 1, "reserved": 0, "failed": 1}
    assert body["count"] == 2
    assert (body["broker"], body["outbox_backlog"], body["user_id"]) == ("connected", 2, None)


def test_an_unchanged_board_answers_304_without_reading_the_orders(client, order_store,
                                                                   monkeypatch):
    place(client)
    etag = client.get("/orders/board").headers["ETag"]

    def no_rows(*args):
        raise AssertionError("the 304 path read the orders")

    monkeypatch.setattr(order_store, "latest", no_rows)
    response = client.get("/orders/board", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == etag


def test_every_change_gives_the_board_a_new_etag(client, order_store, relay):
    seen = [client.get("/orders/board").headers["ETag"]]
    order_id = place(client)
    seen.append(client.get("/orders/board", headers={"If-None-Match": seen[-1]}).headers["ETag"])
    finish(order_store, order_id, "reserved")
    response = client.get("/orders/board", headers={"If-None-Match": seen[-1]})
    assert response.status_code == 200
    assert response.get_json()["orders"][0]["status"] == "reserved"
    seen.append(response.headers["ETag"])
    relay.connected = False
    seen.append(client.get("/orders/board").headers["ETag"])
    assert len(set(seen)) == 4, seen


def test_the_board_of_one_user_counts_and_lists_only_theirs(client, order_store):
    ann = [place(client, "ann") for _ in range(3)]
    place(client, "bob")
    finish(order_store, ann[0], "reserved")
    body = client.get("/orders/board?user_id=ann&limit=2").get_json()
    assert [order["order_id"] for order in body["orders"]] == [ann[2], ann[1]]
    assert body["counts"] == {"accepted": 2, "reserved": 1, "failed": 0}
    assert body["user_id"] == "ann"
    assert client.get("/orders/board?user_id=carl").get_json()["orders"] == []


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("status=failed", "status"),
    ("user_id=a%00b", "user_id"),
])
def test_bad_board_parameters_are_a_400_naming_them(client, query, field):
    response = client.get(f"/orders/board?{query}")
    assert response.status_code == 400
    assert field in response.get_json()["errors"]


# --- shipped with the service ---

def test_the_image_ships_the_page_and_the_gateway_passes_it_through():
    root = Path(__file__).resolve().parents[2]
    ignored = (root / ".dockerignore").read_text().split()
    assert "!order_service/" in ignored
    static = [path.name for path in (root / "order_service" / "static").iterdir()]
    assert {"index.html", "page.css", "page.js"} <= set(static)
    excluded_again = [pattern for pattern in ignored if pattern.startswith("**/")]
    assert excluded_again and not [pattern for pattern in excluded_again
                                   if any(fnmatch(name, pattern[3:]) for name in static)]
    gateway = (root / "compose" / "order-gateway" / "nginx.conf").read_text()
    assert re.findall(r"^\s*location\s+(\S+)", gateway, re.MULTILINE) == ["/"], (
        "every path, / and /static/ included, goes to order_service")
    assert re.search(r"location / \{[^}]*proxy_pass \$order_service;", gateway)


def test_the_bench_polls_as_the_page_does():
    from bench import pagesim as pages

    script = (Path(__file__).resolve().parents[2] / "order_service" / "static" / "page.js").read_text()
    constants = dict(re.findall(r"^const (POLL_MS|JITTER|ROWS) = ([\d.]+);", script, re.MULTILINE))
    assert int(constants["POLL_MS"]) == pages.POLL_SECONDS * 1000
    assert float(constants["JITTER"]) == pages.JITTER
    assert int(constants["ROWS"]) == pages.ROWS
    assert '"/orders/board?"' in script and '"If-None-Match"' in script


def test_counts_are_recounted_at_most_once_per_max_age_for_each_user():
    from order_service.board import CachedCounts

    now, recounts = [0.0], []

    def count(user_id: str | None) -> dict[str, int]:
        recounts.append((now[0], user_id))
        return {"accepted": len(recounts)}

    counts = CachedCounts(count, max_age=1.0, size=2, clock=lambda: now[0])
    assert [counts.get() for _ in range(5)] == [{"accepted": 1}] * 5
    assert counts.get("ann") == {"accepted": 2}
    now[0] = 0.99
    assert (counts.get(), counts.get("ann")) == ({"accepted": 1}, {"accepted": 2})
    now[0] = 1.0
    assert counts.get() == {"accepted": 3}
    counts.get("bob")  # a third user: the one recounted longest ago (ann) is dropped
    counts.get("ann")
    assert recounts == [(0.0, None), (0.0, "ann"), (1.0, None), (1.0, "bob"), (1.0, "ann")]


def test_while_one_thread_recounts_the_others_answer_with_the_last_counts():
    import threading

    from order_service.board import CachedCounts

    now, recounting, release = [0.0], threading.Event(), threading.Event()

    def count(user_id: str | None) -> dict[str, int]:
        if now[0] > 0:  # the second recount waits until the test lets it finish
            recounting.set()
            release.wait(5)
        return {"accepted": int(now[0])}

    counts = CachedCounts(count, max_age=1.0, clock=lambda: now[0])
    assert counts.get() == {"accepted": 0}
    now[0] = 2.0
    slow = threading.Thread(target=counts.get)
    slow.start()
    assert recounting.wait(5)
    assert counts.get() == {"accepted": 0}, "answered at once with the last counts"
    release.set()
    slow.join(5)
    assert counts.get() == {"accepted": 2}
