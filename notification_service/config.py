"""NotificationService settings, read from the environment once."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from messaging import topology
from messaging.settings import ServiceSettings, env_int, service_settings


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything NotificationService reads from its environment; the defaults are these fields'."""

    port: int = 8103


DEFAULTS = Settings()


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raises ConfigError on a bad value."""
    env = os.environ if env is None else env
    return Settings(**service_settings(env, topology.NOTIFICATION_SERVICE),
                    port=env_int(env, "PORT", DEFAULTS.port, 1, 65535))
