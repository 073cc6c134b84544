"""Start, stop and kill the services as real processes through their `python -m` entrypoints."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
MODULES = {"order": "order_service", "inventory": "inventory_service",
           "notification": "notification_service"}
FILENAMES = {"order": "orders.db", "inventory": "inventory.db", "notification": "notifications.db"}
AUDIT_FLAGS = {"order": "orders", "inventory": "inventory", "notification": "notifications"}


def test_backend() -> str:
    """The backend the stacks of a test run use: TEST_BACKEND, `sqlite` (default) or `postgres`."""
    backend = os.environ.get("TEST_BACKEND") or "sqlite"
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"TEST_BACKEND must be sqlite or postgres, got {backend!r}")
    return backend


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """One service process: `python -m <module>` with its own data dir (or database), port and log.

    With a `database_url` the service keeps its store in that PostgreSQL database, else in
    a SQLite file in its data dir.
    """

    def __init__(self, name: str, env: dict[str, str], workdir: Path,
                 database_url: str | None = None) -> None:
        self.name, self.module = name, MODULES[name]
        self.port = free_port()
        self.data_dir = workdir / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.database_url = database_url
        environment = {**os.environ}
        environment.pop("DATABASE_URL", None)  # never a database the test did not give it
        self.env = {**environment, "PYTHONUNBUFFERED": "1", **env, "PORT": str(self.port),
                    "DATA_DIR": str(self.data_dir)}
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.process: subprocess.Popen | None = None

    @property
    def store(self) -> str:
        """Where its store is: the PostgreSQL URL, or the path of its SQLite file."""
        return self.database_url or str(self.data_dir / FILENAMES[self.name])

    def audit_args(self) -> list[str]:
        """The `python -m ops.audit` arguments that name this service's store."""
        flag = AUDIT_FLAGS[self.name]
        return [f"--{flag}-url" if self.database_url else f"--{flag}-db", self.store]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **env: str) -> ServiceProcess:
        """Start the process (extra environment overrides for this start only)."""
        assert not self.running, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT,
                                            env={**self.env, **env}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def health(self) -> tuple[int, dict] | None:
        """(status code, body) of GET /health, or None when nothing answers."""
        try:
            response = requests.get(f"{self.url}/health", timeout=2)
            return response.status_code, response.json()
        except (requests.RequestException, ValueError):
            return None

    def wait_healthy(self, timeout: float = 30.0) -> ServiceProcess:
        """Poll /health until it answers 200, or fail with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            answer = self.health()
            if answer and answer[0] == 200:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s:\n{self.tail()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a graceful exit; return the exit code."""
        assert self.process is not None
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process and everything it started (like a container being killed)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class Stack:
    """The three services in one vhost, each with its own data directory or database.

    `backend` is `sqlite` (a file in each data directory) or `postgres` (a fresh database per
    service, dropped by `close()`); by default the one TEST_BACKEND names.
    """

    def __init__(self, vhost: str, workdir: Path, backend: str | None = None, **env: str) -> None:
        base = {"RABBITMQ_VHOST": vhost, "RABBITMQ_HOST": "127.0.0.1",
                "INVENTORY_SUCCESS_RATE": "1.0", **env}
        self.vhost, self.workdir = vhost, workdir
        self.backend = backend or test_backend()
        self._databases: list[str] = []
        if self.backend == "postgres":
            from stack import postgres  # psycopg only for a PostgreSQL stack

            self._databases = [postgres.create_database(f"stack_{name}") for name in MODULES]
        urls = dict(zip(MODULES, self._databases, strict=False))
        self.services = {name: ServiceProcess(name, base, workdir, urls.get(name))
                         for name in MODULES}

    def audit_args(self) -> list[str]:
        """The `python -m ops.audit` arguments that name the three stores."""
        return [arg for service in self.services.values() for arg in service.audit_args()]

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    @property
    def order_url(self) -> str:
        return self.services["order"].url

    def start(self, *names: str, timeout: float = 30.0) -> Stack:
        """Start the named services (all by default) and wait until each is healthy."""
        chosen = [self.services[n] for n in (names or MODULES)]
        for service in chosen:
            service.start()
        for service in chosen:
            service.wait_healthy(timeout)
        return self

    def close(self) -> None:
        """Stop everything still running, gracefully if possible."""
        for service in self.services.values():
            if service.running:
                try:
                    service.terminate(timeout=15)
                except Exception:
                    service.kill()
            else:
                service.kill()
        if self._databases:
            from stack import postgres

            for url in self._databases:
                postgres.drop_database(url)
            self._databases = []
