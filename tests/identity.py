"""A tiny OpenID Connect provider for tests: keys of its own, minted tokens, its discovery document
and JWKS served over HTTP on 127.0.0.1, and keys it can rotate while a service runs."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "order-service"
DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/jwks"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    """The public half of `key` as a JWK with `kid` (and `alg`, when given)."""
    algorithm = (jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey)
                 else jwt.algorithms.ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey)
                 else jwt.algorithms.OKPAlgorithm)
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", **({"alg": alg} if alg else {})})
    return jwk


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdentityProvider:
    """Serves DISCOVERY and JWKS; `token()` mints tokens with its keys; `hits` counts the fetches."""

    def __init__(self, audience: str = AUDIENCE) -> None:
        self.audience = audience
        self.keys: dict[str, Any] = {}  # kid -> private key, published or not
        self.published: list[dict[str, Any]] = []
        self.hits: Counter[str] = Counter()
        self.kid = self.add_key(rsa_key())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return self.issuer + JWKS

    def add_key(self, key: Any, alg: str | None = None, publish: bool = True) -> str:
        """Keep `key` under a new kid, published in the JWKS unless told otherwise; return the kid."""
        kid = uuid.uuid4().hex[:12]
        self.keys[kid] = key
        if publish:
            self.published.append(public_jwk(key, kid, alg))
        return kid

    def rotate(self) -> str:
        """Replace every published key with a new RSA key, which signs from now on."""
        self.published = []
        self.kid = self.add_key(rsa_key())
        return self.kid

    def claims(self, sub: str = "alice", roles: tuple[str, ...] = (), lifetime: float = 300,
               **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.issuer, "aud": self.audience, "sub": sub, "iat": now,
                "exp": now + int(lifetime), "roles": list(roles), **extra}

    def token(self, sub: str = "alice", roles: tuple[str, ...] = (), kid: str | None = None,
              alg: str = "RS256", lifetime: float = 300, **extra: Any) -> str:
        """A token signed with the key `kid` (the current one by default)."""
        kid = kid or self.kid
        return jwt.encode(self.claims(sub, roles, lifetime, **extra), self.keys[kid], algorithm=alg,
                          headers={"kid": kid})

    def alg_none_token(self, sub: str = "alice") -> str:
        """An unsigned token (`alg: none`) naming a published kid."""
        return self._signing_input("none", sub) + "."

    def hmac_token(self, sub: str = "alice") -> str:
        """The key-confusion forgery: HS256 with the published RSA public key (PEM) as the secret."""
        public_pem = self.keys[self.kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        signing_input = self._signing_input("HS256", sub)
        return f"{signing_input}.{b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())}"

    def _signing_input(self, alg: str, sub: str) -> str:
        header = {"alg": alg, "typ": "JWT", "kid": self.kid}
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(self.claims(sub)).encode())}"

    def headers(self, sub: str = "alice", roles: tuple[str, ...] = (), **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, roles, **kwargs)}"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.hits[self.path] += 1
                if self.path == DISCOVERY:
                    body: Any = {"issuer": provider.issuer, "jwks_uri": provider.jwks_url,
                                 "id_token_signing_alg_values_supported": ["RS256"]}
                elif self.path == JWKS:
                    body = {"keys": list(provider.published)}
                else:
                    self.send_error(404)
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        return Handler
