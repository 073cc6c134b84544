"""Who is calling: bearer JWTs from the campus's OpenID Connect provider, verified against the keys
it publishes, and the caller a token names. No Flask (`order_service/access.py` is the HTTP glue).

PyJWT verifies (signature, issuer, audience, expiry) and its `PyJWKClient` fetches and caches the
issuer's JWKS: an unknown key id refetches the set, at most once per `cooldown` seconds, so a
rotated key is picked up without a restart and a flood of made-up key ids costs one fetch.
Only the asymmetric algorithms below are accepted, and only those that fit the key: `none` and
HMAC (whose "secret" would be the public key) are refused.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from messaging.events import storable_text

logger = logging.getLogger(__name__)

RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_CURVES = {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}
ALGORITHMS = (*RSA, "ES256", "ES384", "ES512", "EdDSA")  # asymmetric only: never none or HS*
LEEWAY_SECONDS = 30  # clock skew allowed on exp, nbf and iat
TIMEOUT_SECONDS = 5.0  # one fetch of the discovery document or the JWKS
JWKS_LIFESPAN_SECONDS = 300.0  # a fetched key set is reused this long (a removed key too)
DISCOVERY_RETRY_SECONDS = 5.0  # after a failed discovery, requests answer 503 without asking again


@dataclass(frozen=True)
class Caller:
    """Whose request this is: the token's subject (None with AUTH=off) and whether they are staff."""

    subject: str | None
    staff: bool


EVERYONE = Caller(subject=None, staff=True)  # AUTH=off: no sign-in, everyone sees everything


class InvalidToken(Exception):
    """No usable bearer token: a 401. `error` is RFC 6750's code (None when no token was sent)."""

    def __init__(self, description: str, error: str | None = "invalid_token") -> None:
        super().__init__(description)
        self.description, self.error = description, error


class KeysUnavailable(Exception):
    """The issuer's keys cannot be fetched right now: a 503, not the caller's fault."""


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or InvalidToken."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidToken("a bearer token is required", error=None)
    if not token.strip():
        raise InvalidToken("the bearer token is empty")
    return token.strip()


def challenge(exc: InvalidToken, realm: str = "order-service") -> str:
    """The WWW-Authenticate value of a 401 (RFC 6750 section 3)."""
    parts = [f'realm="{realm}"']
    if exc.error:
        text = "".join(c for c in exc.description if " " <= c <= "~" and c not in '"\\')
        parts += [f'error="{exc.error}"', f'error_description="{text}"']
    return "Bearer " + ", ".join(parts)


def roles(claims: Mapping[str, Any], claim: str) -> set[str]:
    """The roles in `claim`: a list of strings or a space-separated string; a dotted name walks
    nested objects (Keycloak's `realm_access.roles`)."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {role for role in value if isinstance(role, str)}
    return set()


def caller_of(claims: Mapping[str, Any], roles_claim: str, staff_role: str) -> Caller:
    """The caller a verified token names; InvalidToken when its subject cannot own orders."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip() or not storable_text(subject):
        raise InvalidToken("the token's sub is not a usable user id")
    return Caller(subject=subject, staff=staff_role in roles(claims, roles_claim))


def algorithms_for(key: jwt.PyJWK) -> list[str]:
    """The accepted algorithms that fit this key's type (and curve), narrowed to the JWK's own
    `alg` when it names one."""
    public = key.key
    if isinstance(public, rsa.RSAPublicKey):
        fitting: tuple[str, ...] = RSA
    elif isinstance(public, ec.EllipticCurvePublicKey):
        fitting = EC_CURVES.get(public.curve.name, ())
    elif isinstance(public, ed25519.Ed25519PublicKey):
        fitting = ("EdDSA",)
    else:  # a symmetric ("oct") or private key in a key set is never trusted
        fitting = ()
    jwk = getattr(key, "_jwk_data", None)  # PyJWK keeps the JWK as given; `alg` is optional
    named = jwk.get("alg") if isinstance(jwk, dict) else None
    return [alg for alg in fitting if named is None or alg == named]


def discover_jwks_url(issuer: str, timeout: float = TIMEOUT_SECONDS) -> str:
    """The `jwks_uri` of the issuer's discovery document (OpenID Connect Discovery 1.0)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise KeysUnavailable(f"discovery at {url} failed: {exc}") from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise KeysUnavailable(f"{url} does not describe the issuer {issuer}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("http://", "https://")):
        raise KeysUnavailable(f"{url} names no http(s) jwks_uri")
    return jwks_uri


class Verifier:
    """Verifies bearer JWTs of one issuer and audience; thread-safe, one per process.

    The JWKS URL, when not given, is discovered from the issuer on first use (and again after a
    failure, at most every DISCOVERY_RETRY_SECONDS), so OrderService starts while the provider is
    away and answers 503 until it is back.
    """

    def __init__(self, issuer: str, audience: str, jwks_url: str | None = None,
                 cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer, self.audience, self.cooldown, self._clock = issuer, audience, cooldown, clock
        self._jwks_url = jwks_url
        self._client: jwt.PyJWKClient | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of `token`, or InvalidToken, or KeysUnavailable."""
        try:
            key = self.keys().get_signing_key_from_jwt(token)
            return jwt.decode(token, key.key, algorithms=algorithms_for(key), audience=self.audience,
                              issuer=self.issuer, leeway=LEEWAY_SECONDS,
                              options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWKClientConnectionError as exc:
            raise KeysUnavailable(f"the issuer's keys could not be fetched: {exc}") from None
        except jwt.PyJWKSetError as exc:
            raise KeysUnavailable(f"the issuer's key set is unusable: {exc}") from None
        except jwt.PyJWTError as exc:  # a bad signature, claim, algorithm or an unknown key id
            raise InvalidToken(str(exc) or type(exc).__name__) from None

    def keys(self) -> jwt.PyJWKClient:
        """The JWKS client, discovering its URL first if need be."""
        with self._lock:
            if self._client is None:
                failed_at = self._failed_at
                if failed_at is not None and self._clock() - failed_at < DISCOVERY_RETRY_SECONDS:
                    raise KeysUnavailable(f"discovery of {self.issuer} failed moments ago")
                try:
                    url = self._jwks_url or discover_jwks_url(self.issuer)
                except KeysUnavailable:
                    self._failed_at = self._clock()
                    raise
                logger.info("Verifying tokens of %s with the keys at %s", self.issuer, url)
                self._client = jwt.PyJWKClient(url, lifespan=JWKS_LIFESPAN_SECONDS,
                                               timeout=TIMEOUT_SECONDS, cooldown_duration=self.cooldown)
            return self._client
