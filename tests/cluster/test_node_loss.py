"""Losing a RabbitMQ node while orders flow: the services move to the other nodes of the
cluster, the quorum queues elect new leaders, and every accepted order is decided once."""
from __future__ import annotations

import re
import sqlite3
import time

from stack.cluster import LocalCluster
from tests.chaos.harness import Figures, OrderStream, ResultProbe, settle_and_audit, snapshot
from tests.client import wait_for

CONNECTED = re.compile(r"connected to RabbitMQ at 127\.0\.0\.1:(\d+)")


def final_orders(stack) -> int:
    try:
        return sum(1 for status in snapshot(stack).orders.values() if status in ("reserved", "failed"))
    except sqlite3.OperationalError:  # a store being written as we read it: ask again
        return 0


def ports_connected(stack, name: str) -> list[int]:
    return [int(port) for port in CONNECTED.findall(stack[name].log())]


def test_orders_survive_the_loss_of_the_node_the_services_use(cluster: LocalCluster, cluster_broker,
                                                              cluster_vhost, cluster_stack):
    figures = Figures("cluster_node_loss", probe=ResultProbe(cluster_broker, cluster_vhost))
    stack = cluster_stack.start(timeout=60)
    first = cluster.nodes[0]
    for name in ("order", "inventory", "notification"):  # every connection starts on the first node
        # healthy says the store is writable; the broker connection may be logged a moment later
        wait_for(lambda name=name: ports_connected(stack, name), timeout=30,
                 what=f"{name} to connect to RabbitMQ")
        assert set(ports_connected(stack, name)) == {first.port}, stack[name].tail()

    stream = OrderStream(stack.order_url, rate=30)
    stream.start()
    try:
        wait_for(lambda: final_orders(stack) >= 20, timeout=60, what="orders to flow")
        since = time.monotonic()
        first.stop_app()
        try:
            before = final_orders(stack)
            wait_for(lambda: final_orders(stack) >= before + 40, timeout=60,
                     what="orders to flow again without the first node")
        finally:
            first.start_app()
        after = final_orders(stack)
        wait_for(lambda: final_orders(stack) >= after + 20, timeout=60,
                 what="orders to flow with the first node back")
    finally:
        accepted = stream.stop()
    settle_and_audit(stack, cluster_broker, accepted, figures, since, timeout=90)

    others = {node.port for node in cluster.nodes[1:]}
    for name in ("order", "inventory", "notification"):
        assert others & set(ports_connected(stack, name)), \
            f"{name} never moved to another node:\n{stack[name].tail()}"
    assert figures.lost == 0 and figures.duplicated == 0
    assert figures.accepted >= 80 and stream.refused == 0
