"""The rate limit of POST /order (RATE_LIMIT_ORDERS), kept by Flask-Limiter.

Keyed by the signed-in user (`g.subject`, set by sign-in) or, signed out, by the client's address
(X-Forwarded-For believed only from TRUSTED_PROXIES). The budget is in Redis when REDIS_URL is set,
shared by every worker and replica; otherwise in each process's memory. While Redis cannot be
reached the limit is kept in each process's memory instead (a warning says so once): the limit
guards the kitchen from floods, it must not turn a Redis outage into an order outage.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, g, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded

from order_service import config, own_metrics
from order_service.client_address import client_address

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
STRATEGY = "moving-window"  # at most N in any window, not 2N across the edge of two fixed ones
REDIS_TIMEOUT = 0.5  # seconds a request may wait on Redis before the limit falls back to memory


def _unlimited(view: F) -> F:
    return view


def key_of(proxies: tuple[config.Network, ...]) -> Callable[[], str]:
    """The key function: whose budget a request spends, `user:<subject>` when signed in, else
    `address:<client address>`."""

    def key() -> str:
        subject = g.get("subject")
        if subject:
            return f"user:{subject}"
        return "address:" + client_address(request.remote_addr or "",
                                           request.headers.get("X-Forwarded-For"), proxies)

    return key


def storage(settings: config.Settings) -> tuple[str, dict[str, Any]]:
    """Where the counts are kept: Redis under the prefix, with short timeouts, or memory."""
    if settings.redis_url is None:
        return "memory://", {}
    return settings.redis_url, {"key_prefix": settings.rate_limit_prefix,
                                "socket_connect_timeout": REDIS_TIMEOUT,
                                "socket_timeout": REDIS_TIMEOUT}


def install(app: Flask, settings: config.Settings) -> Callable[[F], F]:
    """Make the app's limiter; return the decorator that limits a view (a no-op when
    RATE_LIMIT_ORDERS is unset: no limiter at all, so nothing is counted)."""
    if settings.rate_limit_orders is None:
        return _unlimited
    key = key_of(settings.trusted_proxies)
    uri, options = storage(settings)
    limiter = Limiter(key, app=app, storage_uri=uri, storage_options=options, strategy=STRATEGY,
                      in_memory_fallback_enabled=True, headers_enabled=False)

    @app.errorhandler(RateLimitExceeded)
    def too_many(exc: RateLimitExceeded) -> tuple[Response, int, dict[str, str]]:
        wait = retry_after(limiter, exc)
        own_metrics.order_rate_limited(key().partition(":")[0])
        return (jsonify({"error": f"too many orders: at most {exc.limit.limit} per client; "
                                  f"retry in {wait} s", "status": 429}),
                429, {"Retry-After": str(wait)})

    route_limit = limiter.limit(settings.rate_limit_orders)

    def limited(view: F) -> F:
        return cast(F, route_limit(view))

    return limited


def retry_after(limiter: Limiter, exc: RateLimitExceeded) -> int:
    """Whole seconds until the budget has room again (at least 1); the limit's whole window when
    the storage cannot say."""
    try:
        current = limiter.current_limit
        reset = current.window.reset_time if current is not None else None
    except Exception:  # the storage went away between the hit and this answer
        reset = None
    if reset is None:
        return max(1, exc.limit.limit.get_expiry())
    return max(1, math.ceil(reset - time.time()))
