"""OrderService settings, read from the environment once."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from messaging.settings import (
    BrokerSettings,
    ConsumerSettings,
    StorageSettings,
    broker_settings,
    consumer_settings,
    env_int,
    env_str,
    storage_settings,
)

# One worker process: its threads share one group commit, one relay and one status consumer, which
# on a small host is cheaper per order than two processes contending for the same SQLite file.
# Scale out with more replicas, or more workers (WEB_CONCURRENCY) on a host with cores to spare.
DEFAULT_WORKERS = 1
DEFAULT_THREADS = 8


@dataclass(frozen=True)
class Settings:
    """Everything OrderService reads from its environment."""

    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    host: str = "0.0.0.0"
    port: int = 8101
    workers: int = 2
    threads: int = 4
    graceful_timeout: int = 20
    max_body_bytes: int = 16 * 1024


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raises ConfigError on a bad value."""
    env = os.environ if env is None else env
    return Settings(
        broker=broker_settings(env),
        storage=storage_settings(env),
        consumer=consumer_settings(env),
        host=env_str(env, "HOST", "0.0.0.0"),
        port=env_int(env, "PORT", 8101, 1, 65535),
        workers=env_int(env, "WEB_CONCURRENCY", DEFAULT_WORKERS, 1, 64),
        threads=env_int(env, "WEB_THREADS", DEFAULT_THREADS, 1, 256),
        graceful_timeout=env_int(env, "GRACEFUL_TIMEOUT", 20, 1, 600),
    )
