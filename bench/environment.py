"""Everything a benchmark run starts, and tears down again: vhosts, the services, the bare endpoint."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from stack.broker import Broker
from stack.processes import ServiceProcess, Stack

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
    """A private vhost with the three services, plus (optionally) the baselines' own processes."""

    def __init__(self, workers: int, threads: int) -> None:
        self.broker = Broker()
        self.env = service_env(workers, threads)
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.vhost: str | None = None
        self.scratch_vhost: str | None = None
        self.stack: Stack | None = None
        self.bare: BareProcess | None = None

    def start(self, baselines: bool = True) -> Environment:
        """Create the vhost(s) and start the services (and the bare endpoint); wait until healthy."""
        self.broker.vhosts()  # fails at once, with the API's address, when RabbitMQ is not there
        self.vhost = self.broker.create_vhost("bench")
        self.stack = Stack(self.vhost, self.workdir, **self.env)
        self.stack.start(timeout=60)
        if baselines:
            self.scratch_vhost = self.broker.create_vhost("bench-raw")
            self.bare = BareProcess(self.env, self.workdir).start()
            self.bare.wait_healthy(60)
        return self

    def close(self, keep_workdir: bool = False) -> None:
        """Stop every process and delete the vhosts; Ctrl-C cannot interrupt this."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for step in (self._stop_bare, self._stop_stack, self._delete_vhosts):
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
