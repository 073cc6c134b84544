"""A three-node RabbitMQ cluster of local nodes, started once for the cluster tests and removed."""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stack.cluster import ClusterBroker, LocalCluster
from stack.processes import Stack
from tests import figures
from tests.chaos.harness import Figures


def pytest_collection_modifyitems(items) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """Three clustered nodes (rabbit-a, -b, -c) on ports of their own; stopped and removed after."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmq-server is not installed")
    nodes = LocalCluster()
    try:
        yield nodes.start()
    finally:
        nodes.close()


@pytest.fixture
def cluster_broker(cluster: LocalCluster) -> ClusterBroker:
    """The test's view of the cluster, through its last node (the one no test stops)."""
    return cluster.broker(len(cluster.nodes) - 1)


@pytest.fixture
def cluster_vhost(cluster_broker: ClusterBroker) -> Iterator[str]:
    name = cluster_broker.create_vhost("cluster")
    yield name
    cluster_broker.delete_vhost(name)


@pytest.fixture
def cluster_stack(cluster: LocalCluster, cluster_vhost: str, tmp_path: Path) -> Iterator[Stack]:
    """The three services on quorum queues, given every node of the cluster; stopped after."""
    stack = Stack(cluster_vhost, tmp_path, RABBITMQ_HOST=cluster.host_list,
                  RABBITMQ_QUEUE_TYPE="quorum")
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def record_figures() -> Callable[[Figures], None]:
    """Report a scenario's figures at the end of the run (also when it failed)."""
    return figures.RESULTS["cluster"].append
