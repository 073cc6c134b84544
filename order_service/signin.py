"""The HTTP glue of sign-in: each request's caller in `flask.g`, the 401, 403 and 503 answers, and
`GET /me`. Verifying a token is `order_service/auth.py`; who may see what, `access.py`.

`g.subject` is the token's `sub` (None with AUTH=off, and on the routes that need no token) and
`g.staff` whether the caller holds the staff role (True with AUTH=off: everyone sees everything).
"""
from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify, request

from order_service import auth, config
from order_service.access import NotYours

logger = logging.getLogger(__name__)

# The page, its files, this description, /health and /metrics need no token (a gateway keeps
# /metrics off the public door); a path no route matches answers its 404 or 405 as before.
PUBLIC = frozenset({"page.index", "page.static", "health_check", "description", "metrics_text"})


def verifier_for(settings: config.Settings) -> auth.Verifier | None:
    """The token verifier AUTH=oidc asks for; None with AUTH=off."""
    if settings.auth != "oidc":
        return None
    assert settings.oidc_issuer and settings.oidc_audience  # config.load refuses less
    return auth.Verifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
                         settings.oidc_jwks_cooldown)


def install(app: Flask, settings: config.Settings, verifier: auth.Verifier | None) -> None:
    """Identify the caller before each request; answer the sign-in errors; serve GET /me."""

    @app.before_request
    def identify() -> None:
        g.subject, g.staff = (None, True) if verifier is None else (None, False)
        if verifier is None or request.routing_exception is not None or request.endpoint in PUBLIC:
            return
        token = auth.bearer_token(request.headers.get("Authorization"))
        who = auth.caller_of(verifier.claims(token), settings.oidc_roles_claim, settings.oidc_staff_role)
        g.subject, g.staff = who.subject, who.staff

    @app.get("/me")
    def me() -> Response:
        return jsonify({"user_id": g.subject, "staff": g.staff, "auth": settings.auth})

    @app.errorhandler(auth.InvalidToken)
    def unauthorized(exc: auth.InvalidToken) -> tuple[Response, int, dict[str, str]]:
        if exc.error:
            logger.info("bearer token refused on %s %s: %s", request.method, request.path, exc)
        return (jsonify({"error": exc.description, "status": 401}), 401,
                {"WWW-Authenticate": auth.challenge(exc)})

    @app.errorhandler(auth.KeysUnavailable)
    def keys_unavailable(exc: auth.KeysUnavailable) -> tuple[Response, int, dict[str, str]]:
        logger.error("cannot verify tokens: %s", exc)
        return (jsonify({"error": "the sign-in provider's keys are unavailable; retry shortly",
                         "status": 503}), 503, {"Retry-After": "5"})

    @app.errorhandler(NotYours)
    def not_yours(exc: NotYours) -> tuple[Response, int]:
        return jsonify({"error": str(exc), "status": 403}), 403


def caller() -> auth.Caller:
    """The caller of the request in hand."""
    return auth.Caller(subject=g.get("subject"), staff=bool(g.get("staff", False)))
