"""OrderService settings, read from the environment once."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict
from urllib.parse import urlsplit

from messaging.settings import (
    ConfigError,
    ServiceSettings,
    env_choice,
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
    # AUTH=off: no sign-in; every caller sees every order and may order for any user_id (the spec's
    # behaviour). AUTH=oidc: a bearer JWT from OIDC_ISSUER for OIDC_AUDIENCE on every order route.
    auth: str = "off"
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None  # None: discovered from the issuer on first use
    oidc_staff_role: str = "staff"
    oidc_roles_claim: str = "roles"
    # An unknown key id refetches the issuer's keys at most this often (seconds).
    oidc_jwks_cooldown: float = 30.0


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
        **auth_settings(env),
    )


class AuthFields(TypedDict):
    """The sign-in fields of Settings, as `auth_settings` reads them."""

    auth: str
    oidc_issuer: str | None
    oidc_audience: str | None
    oidc_jwks_url: str | None
    oidc_staff_role: str
    oidc_roles_claim: str
    oidc_jwks_cooldown: float


def auth_settings(env: Mapping[str, str]) -> AuthFields:
    """AUTH and the OIDC_* settings; with AUTH=oidc the issuer and audience are required."""
    auth = env_choice(env, "AUTH", DEFAULTS.auth.upper(), ("OFF", "OIDC")).lower()
    issuer = _url("OIDC_ISSUER", env_str(env, "OIDC_ISSUER", "", allow_empty=True))
    audience = env_str(env, "OIDC_AUDIENCE", "", allow_empty=True).strip() or None
    if auth == "oidc" and (issuer is None or audience is None):
        missing = " and ".join(name for name, value in (("OIDC_ISSUER", issuer),
                                                         ("OIDC_AUDIENCE", audience)) if value is None)
        raise ConfigError(f"AUTH=oidc needs {missing}")
    return {"auth": auth, "oidc_issuer": issuer, "oidc_audience": audience,
            "oidc_jwks_url": _url("OIDC_JWKS_URL", env_str(env, "OIDC_JWKS_URL", "", allow_empty=True)),
            "oidc_staff_role": env_str(env, "OIDC_STAFF_ROLE", DEFAULTS.oidc_staff_role).strip(),
            "oidc_roles_claim": env_str(env, "OIDC_ROLES_CLAIM", DEFAULTS.oidc_roles_claim).strip(),
            "oidc_jwks_cooldown": env_duration(env, "OIDC_JWKS_COOLDOWN", DEFAULTS.oidc_jwks_cooldown,
                                               0.0, 3600.0)}


def _url(name: str, value: str) -> str | None:
    """The http(s) URL setting `name` holds, or None when it is empty."""
    value = value.strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value
