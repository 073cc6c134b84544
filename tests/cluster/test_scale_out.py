"""Scaled out under load: 2 OrderService, 3 InventoryService and 2 NotificationService instances on
PostgreSQL and the three-node cluster with quorum queues. While orders are posted to both
OrderService instances, (a) the node leading the queues is stopped and brought back, (b) one
instance of each service is killed with SIGKILL, (c) every database connection of the services is
cut; thousands of orders in all. Every accepted order must be decided once, stock exact, notified
once, and the audit pass."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from stack import postgres
from stack.cluster import ClusterBroker, LocalCluster, Node
from stack.processes import Stack
from tests.chaos.harness import Figures, OrderStream, ResultProbe, settle_and_audit
from tests.client import wait_for

REPLICAS = {"order": 2, "inventory": 3, "notification": 2}
RATE = 60.0  # orders per second to each OrderService instance
STEP = 100  # orders that must become final after a fault before the flow counts as recovered
ORDERS = 2000  # orders accepted in all: posting goes on after the faults until there are as many


class FinalOrders:
    """The final orders in the shared OrderService database, counted on one connection of ours
    (made again when the database cuts it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def ids(self) -> set[str]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            rows = self._conn.execute(
                "SELECT order_id FROM orders WHERE status IN ('reserved', 'failed')").fetchall()
            return {row[0] for row in rows}
        except psycopg.OperationalError:  # our own connection was cut with the services'
            self._conn = None
            return set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def leader_of(node: Node, vhost: str, queue: str) -> str:
    """The node name leading quorum queue `queue` in `vhost`, as `node` sees it."""
    out = node.ctl("list_queues", "-p", vhost, "name", "leader", "--no-table-headers").stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return parts[1]
    raise AssertionError(f"no leader for {queue} in:\n{out}")


@pytest.fixture
def scaled_stack(cluster: LocalCluster, cluster_vhost: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(cluster_vhost, tmp_path, backend="postgres", RABBITMQ_HOST=cluster.host_list,
                  RABBITMQ_QUEUE_TYPE="quorum", WEB_CONCURRENCY="1",
                  INVENTORY_INITIAL_STOCK="100000")
    try:
        yield stack
    finally:
        stack.close()


def test_scaled_out_services_lose_a_node_an_instance_each_and_their_database_connections(
        cluster: LocalCluster, cluster_vhost: str, scaled_stack: Stack, record_figures):
    stack = scaled_stack
    for name, count in REPLICAS.items():
        stack.start(name, replicas=count, timeout=90)
    leader_name = leader_of(cluster.nodes[-1], cluster_vhost, "order-events")
    leader = next(node for node in cluster.nodes if node.name == leader_name)
    helper = ClusterBroker(next(node for node in reversed(cluster.nodes) if node is not leader))
    figures = Figures("scale_out_cluster_postgres", probe=ResultProbe(helper, cluster_vhost))
    record_figures(figures)
    final = FinalOrders(stack["order"].database_url)
    streams = [OrderStream(url, rate=RATE) for url in stack.order_urls]
    for stream in streams:
        stream.start()

    def accepted() -> list[str]:
        return [order_id for stream in streams for order_id in list(stream.accepted)]

    def recovered_after(fault: str, inject: Callable[[], None]) -> None:
        """Inject the fault; then wait until every order accepted before it is final and STEP
        more orders have become final: the seconds that takes are the fault's recovery."""
        before, done = accepted(), len(final.ids())
        since = time.monotonic()
        inject()

        def flowing() -> bool:
            ids = final.ids()
            return len(ids) >= done + STEP and all(order_id in ids for order_id in before)

        wait_for(flowing, timeout=75, interval=0.25, what=f"orders to flow again after {fault}")
        figures.notes[f"recovery s: {fault}"] = round(time.monotonic() - since, 2)

    try:
        wait_for(lambda: len(final.ids()) >= STEP, timeout=60, interval=0.25,
                 what="orders to flow")
        recovered_after(f"leader node stopped ({leader.name.split('@')[0]})", leader.stop_app)
        recovered_after("leader node back", leader.start_app)

        def kill_one_of_each() -> None:
            streams[1].stop()  # its OrderService instance is about to die
            for name in ("order-2", "inventory-2", "notification-2"):
                stack[name].kill()

        recovered_after("kill -9 order-2, inventory-2, notification-2", kill_one_of_each)
        urls = [stack[name].database_url for name in REPLICAS]
        recovered_after("database connections cut",
                        lambda: figures.notes.update(cut=postgres.cut_connections(*urls)))
        wait_for(lambda: len(accepted()) >= ORDERS, timeout=120, interval=0.25,
                 what=f"{ORDERS} orders accepted")
    finally:
        for stream in streams:
            stream.stop()
        final.close()
    orders = accepted()
    figures.accepted = len(orders)  # reported even if settling fails
    figures.refused = sum(stream.refused for stream in streams)
    since = time.monotonic()
    settle_and_audit(stack, helper, orders, figures, since, timeout=90)
    figures.notes["orders per OrderService"] = [len(stream.accepted) for stream in streams]
    assert figures.lost == 0 and figures.duplicated == 0
    assert figures.notes["cut"] > 0, "no database connection was cut"
    assert figures.accepted >= ORDERS
