"""METRICS_PORT on a real OrderService under gunicorn: /metrics on its own port only (summing every
worker), 404 for it on the public port whatever Host header a client writes, and nothing but
/metrics on the metrics port."""
from __future__ import annotations

import requests

from stack.metrics import scrape
from stack.processes import free_port
from tests.client import post_orders, wait_for


def test_metrics_are_served_on_the_metrics_port_only(make_stack):
    metrics_port = free_port()
    stack = make_stack(METRICS_PORT=str(metrics_port), WEB_CONCURRENCY="2").start("order")
    public, private = stack.order_url, f"http://127.0.0.1:{metrics_port}"

    refused = requests.get(f"{public}/metrics", timeout=5)
    assert refused.status_code == 404 and refused.json()["status"] == 404
    forged = requests.get(f"{public}/metrics", headers={"Host": f"127.0.0.1:{metrics_port}"}, timeout=5)
    assert forged.status_code == 404, "the listening socket decides, not the Host header"
    assert b"orders_placed_total" not in refused.content + forged.content

    assert requests.get(f"{private}/health", timeout=5).status_code == 404
    assert requests.post(f"{private}/order", json={"user_id": "u", "item": "Burger", "quantity": 1},
                         timeout=5).status_code == 404, "the API is not served on the metrics port"

    post_orders(public, 20, clients=4)
    wait_for(lambda: scrape(private).value("orders_placed_total") == 20,
             what="the metrics port to count every worker's orders")
    assert scrape(private).value("http_requests_total", route="/metrics", status="404") >= 2


def test_without_a_metrics_port_the_metrics_are_on_the_public_port(make_stack):
    stack = make_stack().start("order")
    assert requests.get(f"{stack.order_url}/metrics", timeout=5).status_code == 200
