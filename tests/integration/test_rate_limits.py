"""The rate limit of POST /order on real OrderService processes: a burst over the limit is refused
and places nothing, a forged X-Forwarded-For does not buy a new budget, and two replicas share one
budget through Redis (the machine's, or TEST_REDIS_URL; each test's keys under a prefix of its own,
deleted afterwards)."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
import requests

from stack.metrics import scrape

REDIS_URL = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the test Redis; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the shared-budget tests need Redis at {REDIS_URL} (TEST_REDIS_URL): {exc}")
    prefix = f"test-order-service-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def post(url: str, user_id: str, **headers: str) -> requests.Response:
    return requests.post(f"{url}/order", json={"user_id": user_id, "item": "Burger", "quantity": 1},
                         headers=headers, timeout=10)


def orders_of(url: str, user_id: str) -> int:
    return requests.get(f"{url}/orders", params={"user_id": user_id}, timeout=10).json()["count"]


def test_a_burst_over_the_limit_gets_429s_and_places_no_order_for_them(make_stack):
    # The peer (127.0.0.1) is not a trusted proxy: what it writes in X-Forwarded-For is ignored.
    stack = make_stack(RATE_LIMIT_ORDERS="5/minute", TRUSTED_PROXIES="10.0.0.0/8").start("order")
    url = stack.order_url
    answers = [post(url, "burst", **{"X-Forwarded-For": f"192.0.2.{n}"}) for n in range(8)]
    assert [a.status_code for a in answers] == [202] * 5 + [429] * 3
    for refused in answers[5:]:
        assert refused.json()["status"] == 429 and "too many orders" in refused.json()["error"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert orders_of(url, "burst") == 5
    assert requests.get(f"{url}/health", timeout=5).json()["outbox_backlog"] <= 5
    samples = scrape(url)
    assert samples.value("orders_rate_limited_total", key="address") == 3
    assert samples.value("orders_placed_total") == 5
    assert samples.value("http_requests_total", method="POST", route="/order", status="429") == 3
    for _ in range(5):  # the page's polling is not limited
        assert requests.get(f"{url}/orders/board", timeout=5).status_code == 200


def test_two_replicas_share_one_budget_through_redis(make_stack, redis_prefix):
    stack = make_stack("postgres", RATE_LIMIT_ORDERS="6/minute", REDIS_URL=REDIS_URL,
                       RATE_LIMIT_PREFIX=redis_prefix)
    stack.start("order", replicas=2)
    first, second = stack.order_urls
    answers = [(url, post(url, "shared").status_code) for url in [first, second] * 5]
    assert [status for _, status in answers] == [202] * 6 + [429] * 4, answers
    assert {url for url, status in answers if status == 429} == {first, second}, \
        "both replicas refuse once the one budget is spent"
    assert orders_of(first, "shared") == 6, "the replicas share one database"
    keys = redis.Redis.from_url(REDIS_URL).keys(f"{redis_prefix}:*")
    assert keys, "the budget is kept in Redis under the prefix"
    refused = sum(scrape(url).value("orders_rate_limited_total") for url in stack.order_urls)
    assert refused == 4
