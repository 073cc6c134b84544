"""Read configuration from the environment once, failing fast on bad values."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypedDict, TypeVar

import pika

from messaging.tls import TlsSettings

N = TypeVar("N", int, float)


class ConfigError(ValueError):
    """A configuration value is missing or out of range."""


def env_str(env: Mapping[str, str], name: str, default: str, allow_empty: bool = False) -> str:
    """Return a string setting, refusing an empty one unless allowed."""
    value = env.get(name, default)
    if not value and not allow_empty:
        raise ConfigError(f"{name} must not be empty")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """Return an integer setting within [low, high]."""
    return _env_number(env, name, default, low, high, int, "an integer")


def env_float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """Return a float setting within [low, high]."""
    return _env_number(env, name, default, low, high, float, "a number")


def _env_number(env: Mapping[str, str], name: str, default: N, low: N, high: N,
                kind: Callable[[str], N], what: str) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """Return a setting that must be one of `choices` (case-insensitive)."""
    value = (env.get(name) or default).upper()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return value


QUEUE_TYPES = ("classic", "quorum")


def parse_nodes(hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """Split RABBITMQ_HOST (`host` or `host:port`, comma-separated) into (host, port) pairs."""
    nodes: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        entry = entry.strip()
        has_port = ":" in entry and not (entry.startswith("[") and entry.endswith("]"))
        host, sep, port_text = entry.rpartition(":") if has_port else (entry, "", "")
        bracketed = host.startswith("[") and host.endswith("]")  # an IPv6 address: [::1]:5672
        host = host[1:-1] if bracketed else host
        if (not host or (sep and not port_text) or any(c.isspace() for c in host)
                or (":" in host and not bracketed)):
            raise ConfigError(f"RABBITMQ_HOST must be a comma-separated list of host or "
                              f"host:port, got {hosts!r}")
        port = default_port
        if sep:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ConfigError(f"RABBITMQ_HOST port must be between 1 and 65535, got "
                                  f"{port_text!r} in {entry!r}")
            port = int(port_text)
        nodes.append((host, port))
    return tuple(nodes)


@dataclass(frozen=True)
class BrokerSettings:
    """How to reach RabbitMQ: one node or several (`host` is RABBITMQ_HOST as given)."""

    host: str = "localhost"
    port: int = 5672
    user: str = "guest"
    password: str = "guest"
    vhost: str = "/"
    heartbeat: int = 30
    blocked_timeout: float = 30.0
    socket_timeout: float = 5.0
    queue_type: str = "classic"
    tls: TlsSettings | None = None  # None: plain AMQP
    # The service whose part of the topology this process declares (RABBITMQ_TOPOLOGY=own); None:
    # the whole topology.
    part: str | None = None
    # (service, broker user) of the services whose messages are checked (ORDER_PUBLISHER_USER,
    # INVENTORY_PUBLISHER_USER): a queue whose sender is listed takes messages from that user only.
    senders: tuple[tuple[str, str], ...] = ()

    def expected_sender(self, sender_service: str | None) -> str | None:
        """The broker user that alone may publish what `sender_service` sends; None: unchecked."""
        return dict(self.senders).get(sender_service or "")

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        """Every (host, port) to try, in the order RABBITMQ_HOST lists them."""
        return parse_nodes(self.host, self.port)

    def parameters(self, node: int = 0) -> pika.ConnectionParameters:
        """Build pika connection parameters for the `node`-th node (wrapping around), with
        explicit heartbeat and blocked timeouts."""
        nodes = self.nodes
        host, port = nodes[node % len(nodes)]
        return pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            heartbeat=self.heartbeat,
            blocked_connection_timeout=self.blocked_timeout,
            socket_timeout=self.socket_timeout,
            stack_timeout=self.socket_timeout * 3,
            connection_attempts=1,
            ssl_options=self.tls.options(host) if self.tls else None,
        )

    def all_parameters(self) -> list[pika.ConnectionParameters]:
        """Parameters for every node, for a BlockingConnection that tries them in turn."""
        return [self.parameters(i) for i in range(len(self.nodes))]


_BROKER = BrokerSettings()  # the defaults


TOPOLOGY_SCOPES = ("all", "own")


def broker_settings(env: Mapping[str, str] | None = None, service: str | None = None) -> BrokerSettings:
    """Read the RABBITMQ_* variables (RABBITMQ_HOST may list several nodes) and the publishers'
    users; `service` is the part of the topology RABBITMQ_TOPOLOGY=own declares (None: all)."""
    env = os.environ if env is None else env
    tls = tls_settings(env)
    host = env_str(env, "RABBITMQ_HOST", _BROKER.host)
    port = env_int(env, "RABBITMQ_PORT", AMQPS_PORT if tls else _BROKER.port, 1, 65535)
    parse_nodes(host, port)  # refuse a bad list now, not at the first connect
    return BrokerSettings(
        host=host,
        port=port,
        user=env_str(env, "RABBITMQ_USER", _BROKER.user),
        password=env_str(env, "RABBITMQ_PASSWORD", _BROKER.password, allow_empty=True),
        vhost=env_str(env, "RABBITMQ_VHOST", _BROKER.vhost),
        heartbeat=env_int(env, "RABBITMQ_HEARTBEAT", _BROKER.heartbeat, 0, 3600),
        blocked_timeout=env_float(env, "RABBITMQ_BLOCKED_TIMEOUT", _BROKER.blocked_timeout,
                                  1.0, 3600.0),
        queue_type=_queue_type(env),
        tls=tls,
        part=service if _choice("RABBITMQ_TOPOLOGY", env.get("RABBITMQ_TOPOLOGY") or "all",
                                TOPOLOGY_SCOPES) == "own" else None,
        senders=_senders(env),
    )


AMQPS_PORT = 5671  # RabbitMQ's TLS port, the default port of every node when RABBITMQ_TLS=on


def tls_settings(env: Mapping[str, str]) -> TlsSettings | None:
    """Read RABBITMQ_TLS and the RABBITMQ_TLS_* settings; None when TLS is off."""
    files = {"RABBITMQ_TLS_CA_FILE": env_str(env, "RABBITMQ_TLS_CA_FILE", "", allow_empty=True),
             "RABBITMQ_TLS_CERT_FILE": env_str(env, "RABBITMQ_TLS_CERT_FILE", "", allow_empty=True),
             "RABBITMQ_TLS_KEY_FILE": env_str(env, "RABBITMQ_TLS_KEY_FILE", "", allow_empty=True)}
    verify = env_choice(env, "RABBITMQ_TLS_VERIFY_HOSTNAME", "ON", ("ON", "OFF")) == "ON"
    if env_choice(env, "RABBITMQ_TLS", "OFF", ("ON", "OFF")) == "OFF":
        stray = [name for name, path in files.items() if path]
        if stray:  # a CA given but TLS forgotten would otherwise talk to the broker in clear text
            raise ConfigError(f"{stray[0]} is set but RABBITMQ_TLS is off; set RABBITMQ_TLS=on to "
                              "connect over TLS, or unset it")
        return None
    for name, path in files.items():
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise ConfigError(f"{name} must be a readable file, got {path!r}")
    ca, cert, key = (path or None for path in files.values())
    if bool(cert) != bool(key):
        given, missing = ("CERT", "KEY") if cert else ("KEY", "CERT")
        raise ConfigError(f"RABBITMQ_TLS_{given}_FILE is set but RABBITMQ_TLS_{missing}_FILE is not; "
                          "a client certificate needs both")
    tls = TlsSettings(ca_file=ca, cert_file=cert, key_file=key, verify_hostname=verify)
    _check_usable(tls)
    return tls


def _check_usable(tls: TlsSettings) -> None:
    """Load the files now, so that a wrong one stops the service at start, not at every connect."""
    try:
        TlsSettings(ca_file=tls.ca_file).context()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"RABBITMQ_TLS_CA_FILE holds no usable CA certificate: {exc}") from None
    try:
        tls.context()
    except (OSError, ValueError) as exc:
        raise ConfigError("RABBITMQ_TLS_CERT_FILE and RABBITMQ_TLS_KEY_FILE are not a certificate and "
                          f"its private key: {exc}") from None


def _senders(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(service, broker user) for each publisher whose user is set: those messages are checked."""
    users = {"order": env.get("ORDER_PUBLISHER_USER") or "",
             "inventory": env.get("INVENTORY_PUBLISHER_USER") or ""}
    return tuple((service, user.strip()) for service, user in users.items() if user.strip())


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _queue_type(env: Mapping[str, str]) -> str:
    return _choice("RABBITMQ_QUEUE_TYPE", env.get("RABBITMQ_QUEUE_TYPE") or _BROKER.queue_type,
                   QUEUE_TYPES)


@dataclass(frozen=True)
class StorageSettings:
    """Where and how a service keeps its store: a SQLite file, or a PostgreSQL database."""

    data_dir: str = "./data"
    synchronous: str = "NORMAL"
    busy_timeout_ms: int = 5000
    database_url: str | None = None  # postgresql://...; None: SQLite in data_dir

    def path(self, filename: str) -> str:
        """Return the path of `filename` inside the data directory, creating the directory."""
        os.makedirs(self.data_dir, exist_ok=True)
        return os.path.join(self.data_dir, filename)


_STORAGE = StorageSettings()


def storage_settings(env: Mapping[str, str] | None = None) -> StorageSettings:
    """Read DATABASE_URL, DATA_DIR, SQLITE_SYNCHRONOUS and SQLITE_BUSY_TIMEOUT_MS."""
    env = os.environ if env is None else env
    return StorageSettings(
        data_dir=env_str(env, "DATA_DIR", _STORAGE.data_dir),
        synchronous=env_choice(env, "SQLITE_SYNCHRONOUS", _STORAGE.synchronous, ("NORMAL", "FULL")),
        busy_timeout_ms=env_int(env, "SQLITE_BUSY_TIMEOUT_MS", _STORAGE.busy_timeout_ms, 1, 600_000),
        database_url=database_url(env),
    )


def database_url(env: Mapping[str, str]) -> str | None:
    """DATABASE_URL: None (SQLite) when unset or empty, else a postgresql:// URL."""
    url = env.get("DATABASE_URL") or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        scheme = url.split("://", 1)[0] if "://" in url else url[:20]
        raise ConfigError("DATABASE_URL must look like postgresql://user:password@host:port/dbname,"
                          f" got a URL starting {scheme!r}")
    return url


MAX_AMQP_MESSAGE_BYTES = 134_217_728  # RabbitMQ's own largest max_message_size (128 MiB)


@dataclass(frozen=True)
class ConsumerSettings:
    """How a consumer takes and retries work."""

    # The spec's prefetch is 10; a backlog drains two to three times as fast with 100, because each
    # batch (one transaction, one multiple-ack) can then hold up to 100 messages (BENCHMARKS.md).
    prefetch: int = 100
    max_batch: int = 100  # at most the prefetch: BATCH_SIZE defaults to PREFETCH_COUNT
    retry_limit: int = 5
    retry_base_delay: float = 0.2
    redelivery_limit: int = 10
    # Larger bodies are dead-lettered (`too-large`) unparsed; compose's brokers refuse larger publishes.
    max_message_bytes: int = 1_048_576


_CONSUMER = ConsumerSettings()


def consumer_settings(env: Mapping[str, str] | None = None) -> ConsumerSettings:
    """Read PREFETCH_COUNT, BATCH_SIZE, the retry bounds and MAX_MESSAGE_BYTES."""
    env = os.environ if env is None else env
    prefetch = env_int(env, "PREFETCH_COUNT", _CONSUMER.prefetch, 1, 10_000)
    return ConsumerSettings(
        prefetch=prefetch,
        max_batch=env_int(env, "BATCH_SIZE", prefetch, 1, prefetch),
        retry_limit=env_int(env, "TRANSIENT_RETRY_LIMIT", _CONSUMER.retry_limit, 1, 100),
        retry_base_delay=env_float(env, "TRANSIENT_RETRY_DELAY", _CONSUMER.retry_base_delay,
                                   0.0, 60.0),
        redelivery_limit=env_int(env, "REDELIVERY_LIMIT", _CONSUMER.redelivery_limit, 1, 1000),
        max_message_bytes=env_int(env, "MAX_MESSAGE_BYTES", _CONSUMER.max_message_bytes, 1024,
                                  MAX_AMQP_MESSAGE_BYTES),
    )


_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def env_duration(env: Mapping[str, str], name: str, default: float, low: float,
                 high: float) -> float:
    """Return a duration in seconds: `7d`, `12h`, `30m`, `45s` or plain seconds, within [low, high]."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    number, unit = (raw[:-1], raw[-1].lower()) if raw[-1].lower() in _UNITS else (raw, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ConfigError(f"{name} must be a duration such as 7d, 12h, 30m or a number of "
                          f"seconds, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan and inf
        raise ConfigError(f"{name} must be between {_duration_text(low)} and "
                          f"{_duration_text(high)}, got {raw!r}")
    return value


def _duration_text(seconds: float) -> str:
    """`seconds` in the largest unit that states it exactly (86400 -> `1d`)."""
    for unit, size in _UNITS.items():
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class RetentionSettings:
    """How long a consumer remembers what it handled, and how often it forgets the older part."""

    # A duplicate older than the window is not recognised: longer than any redelivery or replay
    # from a dead-letter queue is expected to take.
    window: float = 7 * 86400.0
    prune_interval: float = 300.0


_RETENTION = RetentionSettings()


def retention_settings(env: Mapping[str, str] | None = None) -> RetentionSettings:
    """Read DEDUP_RETENTION and DEDUP_PRUNE_INTERVAL."""
    env = os.environ if env is None else env
    return RetentionSettings(
        window=env_duration(env, "DEDUP_RETENTION", _RETENTION.window, 1.0, 3650 * 86400.0),
        prune_interval=env_duration(env, "DEDUP_PRUNE_INTERVAL", _RETENTION.prune_interval,
                                    0.05, 86400.0),
    )


@dataclass(frozen=True)
class ServiceSettings:
    """What every service reads: how to reach the broker, where to keep its file, how to consume."""

    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    retention: RetentionSettings = RetentionSettings()
    metrics: bool = True  # METRICS=off: no counting, and GET /metrics answers 404


class ServiceFields(TypedDict):
    """The fields every service's Settings shares (ServiceSettings), as `service_settings` reads them."""

    broker: BrokerSettings
    storage: StorageSettings
    consumer: ConsumerSettings
    retention: RetentionSettings
    metrics: bool


def service_settings(env: Mapping[str, str], service: str | None = None) -> ServiceFields:
    """The ServiceSettings fields read from `env` for `service` (topology's name of it), to pass on
    to a service's own Settings."""
    return {"broker": broker_settings(env, service), "storage": storage_settings(env),
            "consumer": consumer_settings(env), "retention": retention_settings(env),
            "metrics": env_choice(env, "METRICS", "ON", ("ON", "OFF")) == "ON"}
