"""InventoryService settings, read from the environment once."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from messaging import topology
from messaging.settings import (
    ConfigError,
    ServiceSettings,
    env_float,
    env_int,
    env_str,
    service_settings,
)

DEFAULT_MENU = ("Burger", "Pizza", "Salad", "Sushi", "Tacos", "Sandwich", "Noodles", "Coffee",
                "Smoothie", "Fries")


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything InventoryService reads from its environment; the defaults are these fields'."""

    port: int = 8102
    success_rate: float = 0.9
    initial_stock: int = 100_000
    menu: tuple[str, ...] = DEFAULT_MENU


DEFAULTS = Settings()


def _menu(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env_str(env, "INVENTORY_MENU", ",".join(DEFAULTS.menu))
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    if not items:
        raise ConfigError("INVENTORY_MENU must name at least one item")
    return items


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raises ConfigError on a bad value."""
    env = os.environ if env is None else env
    return Settings(
        **service_settings(env, topology.INVENTORY_SERVICE),
        port=env_int(env, "PORT", DEFAULTS.port, 1, 65535),
        success_rate=env_float(env, "INVENTORY_SUCCESS_RATE", DEFAULTS.success_rate, 0.0, 1.0),
        initial_stock=env_int(env, "INVENTORY_INITIAL_STOCK", DEFAULTS.initial_stock, 0, 10**12),
        menu=_menu(env),
    )
