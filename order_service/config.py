"""OrderService settings, read from the environment once."""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict
from urllib.parse import urlsplit

import limits

from messaging import topology
from messaging.settings import (
    ConfigError,
    ServiceSettings,
    env_choice,
    env_duration,
    env_int,
    env_str,
    service_settings,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")


MAX_REQUEST_LINE = 4094  # bytes of method, path and query gunicorn reads; a longer one is a 414


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
    metrics_port: int | None = None  # None: GET /metrics on `port`, beside the API
    rate_limit_orders: str | None = None  # None: POST /order is not limited
    redis_url: str | None = None  # None: each process counts its own budget, in memory
    rate_limit_prefix: str = "order-service"
    trusted_proxies: tuple[Network, ...] = ()
    # How long an Idempotency-Key is remembered: a retry within it is answered with the original.
    idempotency_window: float = 24 * 3600.0
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
    port = env_int(env, "PORT", DEFAULTS.port, 1, 65535)
    return Settings(
        **service_settings(env, topology.ORDER_SERVICE),
        host=env_str(env, "HOST", DEFAULTS.host),
        port=port,
        workers=env_int(env, "WEB_CONCURRENCY", DEFAULTS.workers, 1, 64),
        threads=env_int(env, "WEB_THREADS", DEFAULTS.threads, 1, 256),
        graceful_timeout=env_int(env, "GRACEFUL_TIMEOUT", DEFAULTS.graceful_timeout, 1, 600),
        metrics_port=metrics_port(env, port),
        rate_limit_orders=rate_limit(env_str(env, "RATE_LIMIT_ORDERS", "", allow_empty=True)),
        redis_url=redis_url(env_str(env, "REDIS_URL", "", allow_empty=True)),
        rate_limit_prefix=env_str(env, "RATE_LIMIT_PREFIX", DEFAULTS.rate_limit_prefix),
        trusted_proxies=networks(env_str(env, "TRUSTED_PROXIES", "", allow_empty=True)),
        idempotency_window=env_duration(env, "IDEMPOTENCY_RETENTION", DEFAULTS.idempotency_window,
                                        1.0, 365 * 86400.0),
        **auth_settings(env),
    )


def metrics_port(env: Mapping[str, str], port: int) -> int | None:
    """METRICS_PORT: None (0, the default) or a port other than PORT."""
    value = env_int(env, "METRICS_PORT", 0, 0, 65535)
    if value == port:
        raise ConfigError(f"METRICS_PORT must differ from PORT ({port}): the metrics port is the "
                          "one the public door does not reach")
    return value or None


def rate_limit(text: str) -> str | None:
    """RATE_LIMIT_ORDERS in the limits package's notation (`30/minute`, `5 per second; 100/hour`),
    checked with its own parser; None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        limits.parse_many(text)
    except ValueError:
        raise ConfigError("RATE_LIMIT_ORDERS must be a rate such as 30/minute or "
                          f"`5/second; 100/hour`, got {text!r}") from None
    return text


def redis_url(url: str) -> str | None:
    """REDIS_URL: None when empty, else a redis://, rediss:// or redis+unix:// URL."""
    url = url.strip()
    if not url:
        return None
    if not url.startswith(REDIS_SCHEMES):
        scheme = url.split("://", 1)[0] if "://" in url else url[:20]
        raise ConfigError(f"REDIS_URL must look like redis://host:port/db (or rediss://, "
                          f"redis+unix://), got a URL starting {scheme!r}")
    return url


def networks(text: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: comma-separated addresses or CIDR networks (`10.0.0.5, 172.28.0.0/24`)."""
    found = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError("TRUSTED_PROXIES must be comma-separated IP addresses or networks "
                              f"(CIDR), got {entry!r}") from None
    return tuple(found)


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
