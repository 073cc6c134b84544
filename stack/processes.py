"""Start, stop and kill the services as real processes through their `python -m` entrypoints."""
from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from stack.metrics import Samples, scrape

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


FIRST_PORT, END_PORT = 10000, 32000  # below 32768, where Linux's ephemeral range starts
_handed_out = itertools.count()


def free_port() -> int:
    """A TCP port nobody listens on right now, and that nobody else will be handed.

    A port the kernel picks (bind to 0) comes from the ephemeral range, where any outgoing
    connection - a service's own to the broker - may take it before the service binds it. So
    each xdist worker hands out ports from its own slice below that range, each port once (a
    stopped service keeps its port for its restart), skipping any that something holds.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    size = (END_PORT - FIRST_PORT) // max(1, workers)
    first = FIRST_PORT + (int(worker) if worker.isdigit() else 0) % max(1, workers) * size
    while True:
        handed = next(_handed_out)
        if handed >= size:
            raise RuntimeError(f"every port of {first}-{first + size - 1} was handed out")
        port = first + handed
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def service_of(instance: str) -> str:
    """The service an instance name belongs to: `inventory-2` -> `inventory`."""
    service, _, number = instance.partition("-")
    if service not in MODULES or (number and not number.isdigit()):
        raise ValueError(f"not a service or an instance of one: {instance!r}")
    return service


class ServiceProcess:
    """One service process: `python -m <module>` with its own data dir (or database), port and log.

    With a `database_url` the service keeps its store in that PostgreSQL database, else in
    a SQLite file in its data dir. `name` is the service (`inventory`) or one of its instances
    (`inventory-2`): each instance has its own port, data dir and log.
    """

    def __init__(self, name: str, env: dict[str, str], workdir: Path,
                 database_url: str | None = None) -> None:
        self.name, self.service = name, service_of(name)
        self.module = MODULES[self.service]
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
        return self.database_url or str(self.data_dir / FILENAMES[self.service])

    def audit_args(self) -> list[str]:
        """The `python -m ops.audit` arguments that name this service's store."""
        flag = AUDIT_FLAGS[self.service]
        return [f"--{flag}-url" if self.database_url else f"--{flag}-db", self.store]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, output: int | None = None, **env: str) -> ServiceProcess:
        """Start the process (extra environment overrides for this start only), its output going
        to its log, or to the file descriptor `output`."""
        assert not self.running, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT,
                                            env={**self.env, **env},
                                            stdout=log if output is None else output,
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
        self.signal_stop()
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def signal_stop(self) -> None:
        """Send SIGTERM without waiting (several processes may then stop at once)."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)

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

    def metrics(self) -> Samples:
        """Scrape its GET /metrics (see stack.metrics.Samples)."""
        return scrape(self.url)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class Stack:
    """The three services in one vhost, each with its own data directory or database.

    `backend` is `sqlite` (a file in each data directory) or `postgres` (a fresh database per
    service, owned by a role of its own that the service connects as, both dropped by `close()`);
    by default the one TEST_BACKEND names. `service_env` gives each service's instances variables
    of their own (e.g. its broker user).

    On PostgreSQL a service may run as several instances sharing its database (`start("inventory",
    replicas=3)`, or `start("inventory-2")`): `stack["inventory"]` is the first, `inventory-2`,
    `inventory-3`, ... the others, each with its own port, data dir and log. SQLite stores are
    files of one process, so a SQLite stack runs one instance per service.
    """

    def __init__(self, vhost: str, workdir: Path, backend: str | None = None,
                 service_env: dict[str, dict[str, str]] | None = None, **env: str) -> None:
        self._base = {"RABBITMQ_VHOST": vhost, "RABBITMQ_HOST": "127.0.0.1",
                      "INVENTORY_SUCCESS_RATE": "1.0", **env}
        self._own = service_env or {}  # service -> what only its instances get (e.g. its broker user)
        self.vhost, self.workdir = vhost, workdir
        self.backend = backend or test_backend()
        self._databases: list[str] = []
        if self.backend == "postgres":
            from stack import postgres  # psycopg only for a PostgreSQL stack

            # Each service's own database, as a role that owns it and reaches no other.
            self._databases = [postgres.create_owned_database(f"stack_{name}") for name in MODULES]
        self._urls = dict(zip(MODULES, self._databases, strict=False))
        self.services = {name: ServiceProcess(name, self.env_of(name), workdir, self._urls.get(name))
                         for name in MODULES}

    def env_of(self, service: str) -> dict[str, str]:
        """The environment every instance of `service` starts with."""
        return {**self._base, **self._own.get(service, {})}

    def audit_args(self) -> list[str]:
        """The `python -m ops.audit` arguments that name the three stores."""
        return [arg for name in MODULES for arg in self.services[name].audit_args()]

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name] if name in self.services else self.instance(name)

    def instance(self, name: str) -> ServiceProcess:
        """The instance called `name` (`inventory-2`), made on first use, sharing the database."""
        if name not in self.services:
            service = service_of(name)
            if self.backend != "postgres":
                raise ValueError(f"{name}: several instances of {service} need a shared store; "
                                 f"a SQLite stack runs one instance per service")
            self.services[name] = ServiceProcess(name, self.env_of(service), self.workdir,
                                                 self._urls[service])
        return self.services[name]

    def instances(self, service: str) -> list[ServiceProcess]:
        """Every instance of `service` made so far, the first one first."""
        return [p for p in self.services.values() if p.service == service]

    @property
    def order_url(self) -> str:
        return self.services["order"].url

    @property
    def order_urls(self) -> list[str]:
        """The URL of every OrderService instance made so far."""
        return [p.url for p in self.instances("order")]

    def start(self, *names: str, replicas: int = 1, timeout: float = 30.0) -> Stack:
        """Start the named services or instances (all services by default), each service as
        `replicas` instances, and wait until each is healthy."""
        chosen: list[ServiceProcess] = []
        for name in names or MODULES:
            if name in MODULES:
                chosen += [self[name if n == 1 else f"{name}-{n}"] for n in range(1, replicas + 1)]
            else:
                chosen.append(self.instance(name))
        for service in chosen:
            service.start()
        for service in chosen:
            service.wait_healthy(timeout)
        return self

    def close(self) -> None:
        """Stop everything still running, gracefully if possible (all at once), then drop the
        databases."""
        processes = list(self.services.values())
        for service in processes:
            service.signal_stop()
        for service in processes:
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
