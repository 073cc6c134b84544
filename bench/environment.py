"""Everything a benchmark run starts, and tears down again: vhosts, the services, the bare endpoint."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from bench.procstats import find_process, listening_process
from stack.broker import Broker
from stack.processes import ServiceProcess, Stack

# The backends `python -m bench --configs` can compare: the stores' engine, and whether the broker
# is the machine's node (classic queues) or a local three-node cluster with quorum queues.
CONFIGS = {"sqlite": ("sqlite", False), "postgres": ("postgres", False),
           "postgres-cluster": ("postgres", True), "sqlite-nometrics": ("sqlite", False)}
# What a configuration sets in the services' environment besides: `sqlite-nometrics` is `sqlite`
# with METRICS=off, to measure what the metrics cost in the same run.
CONFIG_ENV = {"sqlite-nometrics": {"METRICS": "off"}}

logger = logging.getLogger(__name__)


def service_env(workers: int, threads: int) -> dict[str, str]:
    """The services' environment: the spec's success rate, stock that never runs out, quiet logs."""
    return {
        "INVENTORY_SUCCESS_RATE": os.environ.get("INVENTORY_SUCCESS_RATE", "0.9"),
        "INVENTORY_INITIAL_STOCK": os.environ.get("INVENTORY_INITIAL_STOCK", str(10**9)),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        "WEB_CONCURRENCY": str(workers), "WEB_THREADS": str(threads), "HOST": "127.0.0.1",
    }


class BareProcess(ServiceProcess):
    """The baseline HTTP endpoint (bench/bare_app.py) as a gunicorn process on a free port."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        super().__init__("order", env, workdir / "bare")
        self.name, self.module = "bare", "bench.bare_app"
        self.log_path = workdir / "bare.log"


class Environment:
    """A private vhost with the three services, plus (optionally) the baselines' own processes.

    `config` (a key of CONFIGS) fixes the stores' backend and the broker; without it the stores
    are on the backend TEST_BACKEND names (SQLite by default) and the broker is the local node.
    With `postgres-cluster` a three-node cluster (stack.cluster.LocalCluster) is started for the
    run and stopped by close(); the services get every node and quorum queues, and the
    benchmark's own AMQP traffic (depths, raw pika baseline) goes to the last node.
    """

    def __init__(self, workers: int, threads: int, config: str | None = None) -> None:
        if config is not None and config not in CONFIGS:
            raise ValueError(f"unknown configuration {config!r}: one of {', '.join(CONFIGS)}")
        self.config = config
        self.backend, self.clustered = CONFIGS[config] if config else (None, False)
        self.cluster = None
        self.broker = Broker()
        self.env = {**service_env(workers, threads), **CONFIG_ENV.get(config or "", {})}
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.vhost: str | None = None
        self.scratch_vhost: str | None = None
        self.stack: Stack | None = None
        self.bare: BareProcess | None = None

    def start(self, baselines: bool = True) -> Environment:
        """Create the vhost(s) and start the services (and the bare endpoint); wait until healthy."""
        if self.clustered:
            self._start_cluster()
        else:
            self.broker.vhosts()  # fails at once, with the API's address, when RabbitMQ is not there
        self.vhost = self.broker.create_vhost("bench")
        self.stack = Stack(self.vhost, self.workdir, self.backend, **self.env)
        self.stack.start(timeout=60)
        if baselines:
            self.scratch_vhost = self.broker.create_vhost("bench-raw")
            self.bare = BareProcess(self.env, self.workdir).start()
            self.bare.wait_healthy(60)
        return self

    def _start_cluster(self) -> None:
        from stack.cluster import LocalCluster

        logger.info("starting a three-node RabbitMQ cluster")
        self.cluster = LocalCluster()
        self.cluster.start()
        self.broker = self.cluster.broker(len(self.cluster.nodes) - 1)
        self.env = {**self.env, "RABBITMQ_HOST": self.cluster.host_list,
                    "RABBITMQ_QUEUE_TYPE": "quorum"}

    @property
    def queue_type(self) -> str:
        """The type of the queues the services (and the raw pika baseline) use."""
        return "quorum" if self.clustered else "classic"

    def pids(self) -> dict[str, int | None]:
        """The process of each service (gunicorn: its master), of the bare endpoint (None when it
        was not started) and of the broker's node(s), by the names the results use."""
        pids: dict[str, int | None] = {name: self.stack[name].process.pid
                                       for name in ("order", "inventory", "notification")}
        pids["bare"] = self.bare.process.pid if self.bare else None
        pids.update(self.broker_pids())
        return pids

    def broker_pids(self) -> dict[str, int | None]:
        """The broker's Erlang VM(s): the machine's node, or each node of the cluster."""
        if self.cluster is None:  # the node on the broker's port; other nodes may run beside it
            return {"rabbitmq": listening_process(self.broker.port) or find_process("beam.smp")}
        pids: dict[str, int | None] = {}
        for node in self.cluster.nodes:
            try:
                pids[f"rabbitmq-{node.home.name}"] = int((node.home / "pid").read_text().strip())
            except (OSError, ValueError):
                pids[f"rabbitmq-{node.home.name}"] = None
        return pids

    def describe(self) -> dict:
        """What this configuration runs on, for the results file."""
        return {"config": self.config, "backend": self.stack.backend if self.stack else self.backend,
                "broker": self.cluster.host_list if self.cluster else
                f"{self.broker.host}:{self.broker.port}",
                "nodes": len(self.cluster.nodes) if self.cluster else 1,
                "queue_type": self.queue_type}

    def close(self, keep_workdir: bool = False) -> None:
        """Stop every process and delete the vhosts (and stop the cluster); Ctrl-C cannot
        interrupt this."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for step in (self._stop_bare, self._stop_stack, self._delete_vhosts,
                         self._stop_cluster):
                try:
                    step()
                except Exception:
                    logger.exception("teardown step %s failed", step.__name__)
            if keep_workdir:
                logger.warning("service logs and databases kept in %s", self.workdir)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_bare(self) -> None:
        if self.bare is not None and self.bare.process is not None:
            self.bare.terminate(timeout=15)

    def _stop_stack(self) -> None:
        if self.stack is not None:
            self.stack.close()

    def _delete_vhosts(self) -> None:
        for vhost in (self.vhost, self.scratch_vhost):
            if vhost is not None:
                self.broker.delete_vhost(vhost)

    def _stop_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
