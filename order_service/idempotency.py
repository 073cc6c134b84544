"""Idempotent POST /order, after the IETF draft "The Idempotency-Key HTTP Header Field": the key's
syntax, the request's fingerprint, what a key seen before means, and the keys in progress. No I/O.

A client sends a fresh key with each new order and the same key when it retries it. The key is
kept with the order it placed, in the same transaction, for a window (IDEMPOTENCY_RETENTION,
24 hours by default), scoped to the caller: the signed-in user, or the order's user_id when
sign-in is off. Within the window the same key with the same order is answered with the original
202 again (marked `Idempotent-Replayed: true`); with a different order it is a 422; while the
first request is still being placed, a 409.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from order_service.handlers import InvalidRequest

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"  # the answer's header: "true" on a replayed answer
MAX_KEY_LENGTH = 255
DEFAULT_WINDOW = 24 * 3600.0
KEY_PROBLEM = f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters, without quotes or backslashes"


class KeyInProgress(Exception):
    """The first request with this key is still being placed: a 409, retry shortly."""


class KeyReused(Exception):
    """The key placed a different order: a 422."""


@dataclass(frozen=True)
class RequestKey:
    """A request's key, whose it is, and the fingerprint of the order it asks for."""

    scope: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Earlier:
    """What a key placed before: the fingerprint of its request, and the order it placed."""

    fingerprint: str
    order_id: str
    created_at: str


def parse_key(raw: str | None) -> str | None:
    """The Idempotency-Key header's key (None without one), or a 400.

    The draft makes the value a Structured Field string (`"a-key"`); the bare key is taken too,
    as most clients send it.
    """
    if raw is None:
        return None
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" and c not in '"\\' for c in key):
        raise InvalidRequest({HEADER: KEY_PROBLEM})
    return key


def fingerprint(fields: Mapping[str, Any]) -> str:
    """The order a request asks for, as a digest: equal for the same order however it is spelled."""
    canonical = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def request_key(key: str, subject: str | None, fields: Mapping[str, Any]) -> RequestKey:
    """The key of a valid order request, scoped to the signed-in user, else to the order's user."""
    return RequestKey(subject if subject is not None else fields["user_id"], key, fingerprint(fields))


def replayed(earlier: Earlier, asked: RequestKey) -> Earlier:
    """The earlier order to answer with again, or KeyReused when it was a different order."""
    if earlier.fingerprint != asked.fingerprint:
        raise KeyReused(f"{HEADER} {asked.key!r} was already used for a different order")
    return earlier


class InProgress:
    """The keys whose requests this process is placing right now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[tuple[str, str]] = set()

    @contextmanager
    def claim(self, asked: RequestKey) -> Iterator[None]:
        """Hold the key while its order is placed; KeyInProgress if another request holds it."""
        held = (asked.scope, asked.key)
        with self._lock:
            if held in self._keys:
                raise KeyInProgress(f"a request with {HEADER} {asked.key!r} is still in progress")
            self._keys.add(held)
        try:
            yield
        finally:
            with self._lock:
                self._keys.discard(held)
