"""A RabbitMQ cluster of three local nodes for tests: started, clustered, stopped and removed.

Each node is its own Erlang VM (`rabbit-a@localhost`, ...) with its own AMQP and distribution
ports, data, logs, configuration and (no) plugins, in a directory of its own owned by the
`rabbitmq` user, whose Erlang cookie the nodes and `rabbitmqctl` share. The machine's own node is
never touched: every command names its node with `-n`.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stack.broker import Broker
from stack.processes import free_port

CTL_TIMEOUT = 120


@dataclass
class Node:
    """One local RabbitMQ node."""

    name: str  # e.g. rabbit-a@localhost
    port: int
    dist_port: int
    home: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ,
                "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.home / "log"),
                "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.home / "pid")}

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `rabbitmqctl -n <this node> ...`."""
        result = subprocess.run(["rabbitmqctl", "-q", "-n", self.name, *args], capture_output=True,
                                text=True, timeout=CTL_TIMEOUT)
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.name} {' '.join(args)}: "
                               f"{result.stdout}{result.stderr}")
        return result

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def log(self) -> str:
        logs = sorted((self.home / "log").glob("*.log"))
        return "\n".join(path.read_text(errors="replace")[-4000:] for path in logs)


class LocalCluster:
    """Three nodes clustered with the first; `close()` stops them and removes their directories."""

    def __init__(self, size: int = 3) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="rabbit-cluster-"))
        tag = uuid.uuid4().hex[:6]
        self.nodes = [Node(f"rabbit-{letter}-{tag}@localhost", free_port(), free_port(),
                           self.home / letter) for letter in "abc"[:size]]
        self._started: list[Node] = []

    @property
    def host_list(self) -> str:
        """RABBITMQ_HOST for services that may use any node."""
        return ",".join(node.address for node in self.nodes)

    def broker(self, node: int) -> ClusterBroker:
        """The test helper, speaking AMQP to one node and managing vhosts with rabbitmqctl."""
        return ClusterBroker(self.nodes[node])

    def start(self) -> LocalCluster:
        """Boot every node, join the others to the first, wait until all run."""
        rabbitmq = pwd.getpwnam("rabbitmq")
        os.chmod(self.home, 0o755)
        for node in self.nodes:
            self._prepare(node, rabbitmq)
        for node in self.nodes:  # boot in parallel: booting is most of the time
            subprocess.run(["rabbitmq-server", "-detached"], env=node.env(), check=True,
                           capture_output=True, timeout=CTL_TIMEOUT, cwd=self.home)
            self._started.append(node)
        for node in self.nodes:
            self._await(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.start_app()
        return self

    def _prepare(self, node: Node, owner: pwd.struct_passwd) -> None:
        for sub in ("", "mnesia", "log"):
            (node.home / sub).mkdir(parents=True, exist_ok=True)
        (node.home / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.port}\nloopback_users = none\n")
        (node.home / "enabled_plugins").write_text("[].\n")
        for path in [node.home, *node.home.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _await(self, node: Node) -> None:
        result = node.ctl("wait", "--timeout", "90", str(node.home / "pid"), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{node.name} did not start: {result.stderr}\n{node.log()}")

    def close(self) -> None:
        """Stop every node this cluster started (killing what will not stop), remove the files."""
        for node in self._started:
            if node.ctl("stop", check=False).returncode != 0:
                self._kill(node)
        self._started.clear()
        shutil.rmtree(self.home, ignore_errors=True)

    @staticmethod
    def _kill(node: Node) -> None:
        """Kill a node that would not stop (e.g. still booting) by the pid it writes early on."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(int((node.home / "pid").read_text().strip()), signal.SIGKILL)
                return
            except (OSError, ValueError):
                time.sleep(0.2)


class ClusterBroker(Broker):
    """`Broker` for a node with no management plugin: vhosts are made with rabbitmqctl."""

    def __init__(self, node: Node) -> None:
        super().__init__(host="127.0.0.1", port=node.port)
        self.node = node

    def create_vhost(self, prefix: str = "test", name: str | None = None) -> str:
        name = name or f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.node.ctl("add_vhost", name)
        self.node.ctl("set_permissions", "-p", name, self.user, ".*", ".*", ".*")
        return name

    def delete_vhost(self, name: str) -> None:
        self.node.ctl("delete_vhost", name, check=False)
