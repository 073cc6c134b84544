"""One local RabbitMQ node started with a given set of plugins, e.g. to read what rabbitmq_prometheus
serves.

Started and removed like the nodes of `stack.cluster` (its own node name, ports, data and logs in
a directory owned by the `rabbitmq` user), never touching the machine's own node. The plugins are
given as Docker Compose gives them, in RABBITMQ_ENABLED_PLUGINS; the management and Prometheus
listeners get free ports of their own, since the machine's node may hold 15672 and 15692.
"""
from __future__ import annotations

import pwd
from dataclasses import dataclass

from stack.cluster import LocalCluster, Node
from stack.processes import free_port


@dataclass
class PluginNode(Node):
    """A node whose plugins are RABBITMQ_ENABLED_PLUGINS (comma-separated plugin names)."""

    plugins: str = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), "RABBITMQ_ENABLED_PLUGINS": self.plugins}


class LocalPluginNode(LocalCluster):
    """A cluster of one `PluginNode`; `close()` stops it and removes its directory."""

    def __init__(self, plugins: str) -> None:
        super().__init__(size=1)
        node = self.nodes[0]
        self.node = PluginNode(node.name, node.port, node.dist_port, node.home, plugins)
        self.nodes = [self.node]
        self.management_port, self.prometheus_port = free_port(), free_port()

    def metrics_url(self, path: str = "/metrics") -> str:
        """Where rabbitmq_prometheus serves `path` on this node."""
        return f"http://127.0.0.1:{self.prometheus_port}{path}"

    def _prepare(self, node: Node, owner: pwd.struct_passwd) -> None:
        super()._prepare(node, owner)
        with (node.home / "rabbitmq.conf").open("a") as conf:
            conf.write(f"management.tcp.port = {self.management_port}\n"
                       f"prometheus.tcp.port = {self.prometheus_port}\n")
