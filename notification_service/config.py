"""NotificationService settings, read from the environment once."""
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
    storage_settings,
)


@dataclass(frozen=True)
class Settings:
    """Everything NotificationService reads from its environment."""

    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    port: int = 8103


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raises ConfigError on a bad value."""
    env = os.environ if env is None else env
    return Settings(broker=broker_settings(env), storage=storage_settings(env),
                    consumer=consumer_settings(env), port=env_int(env, "PORT", 8103, 1, 65535))
