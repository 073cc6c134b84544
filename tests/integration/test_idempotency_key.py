"""Idempotency-Key against real OrderService processes: replicas answering one key at once, and a
process killed after the commit, before its answer left.

The kill lands in that window for certain, not by luck: the service's output goes to a pipe the
test has filled, so the first line it logs after committing the order ("Order accepted") blocks
its thread before the 202 is written. The answer is lost; the client retries.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import select
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from stack.processes import ServiceProcess, Stack
from tests.client import wait_for

ORDER = {"item": "Burger", "quantity": 1}
F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity


def orders_of(url: str, user_id: str) -> list[dict]:
    return requests.get(f"{url}/orders", params={"user_id": user_id}, timeout=10).json()["orders"]


def place(url: str, user_id: str, key: str | None, timeout: float = 10) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return requests.post(f"{url}/order", json={"user_id": user_id, **ORDER}, headers=headers,
                         timeout=timeout)


@pytest.mark.parametrize(("backend", "replicas", "workers"), [
    pytest.param("postgres", 2, "1", id="two-replicas-on-postgresql"),
    pytest.param("sqlite", 1, "2", id="two-workers-on-one-sqlite-file"),
])
def test_many_taps_on_two_processes_at_once_place_one_order(make_stack, backend, replicas, workers):
    stack: Stack = make_stack(backend, WEB_CONCURRENCY=workers).start("order", replicas=replicas)
    urls = stack.order_urls * (2 if replicas == 2 else 1)
    taps = 8
    with ThreadPoolExecutor(max_workers=taps) as pool:
        for round_ in range(12):
            user, key = f"tapper-{round_}", str(uuid.uuid4())
            start = threading.Barrier(taps)

            def tap(i: int, user: str = user, key: str = key, start: threading.Barrier = start):
                start.wait(timeout=10)
                return place(urls[i % len(urls)], user, key)

            answers = list(pool.map(tap, range(taps)))
            stored = orders_of(urls[0], user)
            assert len(stored) == 1, f"round {round_}: {len(stored)} orders for one key"
            placed = [a for a in answers if a.status_code == 202]
            assert placed, [a.status_code for a in answers]
            assert {a.json()["order_id"] for a in placed} == {stored[0]["order_id"]}
            assert sum("Idempotent-Replayed" not in a.headers for a in placed) <= 1
            assert all(a.status_code in (202, 409) for a in answers), [a.text for a in answers]


@contextlib.contextmanager
def stuck_output() -> Iterator[tuple[int, Callable[[], None]]]:
    """A pipe for a service's output, drained until `fill()` is called; then full, so that the
    service's next log line blocks. Yields (the write end for the service, fill)."""
    read, write = os.pipe()
    fcntl.fcntl(write, F_SETPIPE_SZ, 4096)
    stop_draining = threading.Event()

    def drain() -> None:
        while not stop_draining.is_set():
            if select.select([read], [], [], 0.01)[0]:
                os.read(read, 65536)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()

    def fill() -> None:
        stop_draining.set()
        drainer.join(timeout=10)
        # A write end of our own, non-blocking: the service's shares nothing with it but the pipe.
        filler = os.open(f"/proc/self/fd/{write}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            for chunk in (512, 1):
                with contextlib.suppress(BlockingIOError):
                    while True:
                        os.write(filler, b"#" * chunk)
        finally:
            os.close(filler)

    try:
        yield write, fill
    finally:
        stop_draining.set()
        os.close(read)
        os.close(write)


def lost_answer_then_retry(order: ServiceProcess, user: str,
                           key: str | None) -> tuple[list[dict], requests.Response]:
    """Place an order whose process is killed -9 after the commit, before the 202 leaves; restart
    it, retry as a client would. Returns the user's stored orders and the retry's answer."""
    with stuck_output() as (output, fill):
        order.start(output=output).wait_healthy()
        fill()
        tapped: dict[str, object] = {}

        def tap() -> None:
            try:
                tapped["answer"] = place(order.url, user, key, timeout=30)
            except requests.RequestException as lost:
                tapped["lost"] = lost

        client = threading.Thread(target=tap, daemon=True)
        client.start()
        wait_for(lambda: orders_of(order.url, user), timeout=20, what="the order committed")
        assert client.is_alive() and "answer" not in tapped, "the 202 must not have left yet"
        order.kill()
        client.join(timeout=10)
        assert "lost" in tapped, "the client saw its connection die without an answer"
    order.start().wait_healthy()
    retry = place(order.url, user, key)
    return orders_of(order.url, user), retry


def test_a_retry_after_a_kill_between_the_commit_and_the_answer_gets_the_original_order(make_stack):
    order = make_stack().services["order"]
    stored, retry = lost_answer_then_retry(order, "double-tapper", str(uuid.uuid4()))
    assert retry.status_code == 202
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert [o["order_id"] for o in stored] == [retry.json()["order_id"]]
    assert retry.json()["timestamp"] == stored[0]["created_at"]


def test_without_a_key_the_same_lost_answer_and_retry_is_a_second_order(make_stack):
    """What the key prevents: the double tap of a client that sends none."""
    order = make_stack().services["order"]
    stored, retry = lost_answer_then_retry(order, "double-tapper", None)
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
    assert len(stored) == 2
