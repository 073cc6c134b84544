"""OrderService settings, read from the environment once."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from messaging.settings import (
    ServiceSettings,
    env_duration,
    env_int,
    env_str,
    service_settings,
)


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything OrderService reads from its environment; the defaults are these fields'."""

    host: str = "0.0.0.0"
    port: int = 8101
    # One worker process: its threads share one group commit, one relay and one status consumer,
    # which on a small host is cheaper per order than two processes contending for one SQLite
    # file. Scale out with replicas, or more workers (WEB_CONCURRENCY) on a host with cores to spare.
    workers: int = 1
    threads: int = 8
    graceful_timeout: int = 20
    max_body_bytes: int = 16 * 1024
    # How long an Idempotency-Key is remembered: a retry within it is answered with the original.
    idempotency_window: float = 24 * 3600.0


DEFAULTS = Settings()


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raises ConfigError on a bad value."""
    env = os.environ if env is None else env
    return Settings(
        **service_settings(env),
        host=env_str(env, "HOST", DEFAULTS.host),
        port=env_int(env, "PORT", DEFAULTS.port, 1, 65535),
        workers=env_int(env, "WEB_CONCURRENCY", DEFAULTS.workers, 1, 64),
        threads=env_int(env, "WEB_THREADS", DEFAULTS.threads, 1, 256),
        graceful_timeout=env_int(env, "GRACEFUL_TIMEOUT", DEFAULTS.graceful_timeout, 1, 600),
        idempotency_window=env_duration(env, "IDEMPOTENCY_RETENTION", DEFAULTS.idempotency_window,
                                        1.0, 365 * 86400.0),
    )
