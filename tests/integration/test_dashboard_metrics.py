"""Every metric the Grafana dashboard asks for exists: found in a live scrape, not assumed.

The services' names come from GET /metrics on the three services running as real processes, after
traffic that gives each family a sample (an order, an order for an unknown item, poison on both
exchanges). RabbitMQ's names come from a private local node started with the plugins compose
gives the broker and scraped on the path Prometheus uses; the machine's own node is not touched.
"""
from __future__ import annotations

import shutil
from typing import Any

import pytest
import requests

from messaging import topology
from stack.cluster import ClusterBroker
from stack.metrics import Samples
from stack.plugin_node import LocalPluginNode
from tests import dashboard
from tests.client import all_final, post_order, publish, wait_for
from tests.integration.test_compose import BASE, resolved
from tests.integration.test_compose_monitoring import jobs

BROKER_PREFIX = "rabbitmq_"
DEAD_LETTER_QUEUES = [queue.name for queue in topology.DEAD_LETTER_QUEUES]


def scrape(*urls: str) -> dict[str, set[str]]:
    """Sample name -> the label names it carries, over every URL (Prometheus text format)."""
    found: dict[str, set[str]] = {}
    for url in urls:
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        for name, labels, _ in Samples(response.text).samples:
            found.setdefault(name, set()).update(labels)
    return found


def problems_after(poll: Any, timeout: float) -> list[str]:
    """Poll `poll()` (a list of problems) until it is empty or `timeout` passes; the last list."""
    last: list[str] = []

    def solved() -> bool:
        try:
            last[:] = poll()
        except requests.RequestException as exc:
            last[:] = [f"no scrape: {exc}"]
        return not last

    try:
        wait_for(solved, timeout=timeout, interval=0.5, what="every name the dashboard uses")
    except AssertionError:
        pass
    return last


def test_every_service_metric_the_dashboard_uses_is_served(stack, broker) -> None:
    board = dashboard.load()
    orders = [post_order(stack.order_url)["order_id"],
              post_order(stack.order_url, item="NotOnTheMenu")["order_id"]]
    with broker.channel(stack.vhost) as channel:
        publish(channel, b"{not json", message_id="poison-order")
        publish(channel, b"not json either", exchange=topology.INVENTORY_EXCHANGE,
                routing_key=topology.INVENTORY_RESERVED_KEY, message_id="poison-result")
    wait_for(lambda: all_final(stack.order_url, orders), timeout=30, what="both orders final")
    for queue in DEAD_LETTER_QUEUES:
        wait_for(lambda q=queue: broker.depth(stack.vhost, q) == 1, timeout=30,
                 what=f"a dead letter in {queue}")
    urls = [f"{stack[name].url}/metrics" for name in ("order", "inventory", "notification")]
    problems = problems_after(
        lambda: dashboard.unknown_names(board, scrape(*urls), exclude=BROKER_PREFIX), timeout=20)
    assert not problems, "the dashboard asks for names the services do not serve:\n" + \
        "\n".join(problems)


@pytest.mark.cluster
def test_every_broker_metric_the_dashboard_uses_is_served_by_the_plugin_compose_enables() -> None:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmq-server is not installed")
    compose = resolved(BASE)
    plugins = compose["services"]["rabbitmq"]["environment"]["RABBITMQ_ENABLED_PLUGINS"]
    path = jobs(compose)["rabbitmq"]["metrics_path"]
    board = dashboard.load()
    assert any(name.startswith(BROKER_PREFIX) for name in dashboard.metric_names(board))
    node = LocalPluginNode(plugins)
    try:
        node.start()
        with ClusterBroker(node.node).channel("/") as channel:  # queue metrics need a queue
            channel.queue_declare(topology.ORDER_EVENTS.name, durable=True)
            channel.basic_publish("", topology.ORDER_EVENTS.name, b"{}")
        problems = problems_after(lambda: dashboard.unknown_names(
            board, scrape(node.metrics_url(path)), prefix=BROKER_PREFIX), timeout=30)
    finally:
        node.close()
    assert not problems, f"the dashboard asks for names {path} does not serve:\n" + \
        "\n".join(problems)
