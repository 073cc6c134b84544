"""The HTTP shell of OrderService: a Flask app factory."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any, Protocol

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, UnsupportedMediaType

from messaging import events
from messaging.db.outbox import PendingMessage
from messaging.observability import exposition, health, trace_context
from order_service import (
    access,
    auth,
    config,
    handlers,
    idempotency,
    openapi,
    own_metrics,
    rate_limits,
    request_spans,
    signin,
)
from order_service.handlers import InvalidRequest
from order_service.page import page
from order_service.store import OrderStore

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the app needs of the outbox relay."""

    def claimant(self) -> str | None: ...

    def hand_over(self, rows: list[PendingMessage]) -> None: ...

    @property
    def connected(self) -> bool: ...


def create_app(settings: config.Settings | None = None, store: OrderStore | None = None,
               publisher: Publisher | None = None, verifier: auth.Verifier | None = None) -> Flask:
    """Build the OrderService app; tests pass their own settings, store, publisher and verifier."""
    settings = settings or config.load()
    store = store or OrderStore.open(settings.storage)
    verifier = verifier or signin.verifier_for(settings)
    app = Flask(__name__, static_folder=None)  # the page's blueprint serves static/
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["order_store"] = store
    app.extensions["publisher"] = publisher
    request_spans.install(app)
    app.register_blueprint(page)

    @app.after_request
    def secure(response: Response) -> Response:
        """The shared security headers on every response; the page's own policy stays on the page."""
        for name, value in health.SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    store.keep_keys_for(settings.idempotency_window)
    in_progress = app.extensions["keys_in_progress"] = idempotency.InProgress()
    limit_orders = rate_limits.install(app, settings)  # a no-op unless RATE_LIMIT_ORDERS is set

    @app.post("/order")
    @limit_orders
    def place_order() -> tuple[Response, int, dict[str, str]]:
        caller = signin.caller()
        fields = handlers.validate(access.with_owner(_json_body(), caller))
        access.check_owner(fields["user_id"], caller)
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
        if key is None:
            return _place(fields, None)
        asked = idempotency.request_key(key, caller.subject, fields)
        earlier = store.earlier(asked)
        if earlier is not None:
            return _replay(earlier, asked)
        with in_progress.claim(asked):
            return _place(fields, asked)

    def _place(fields: dict[str, Any],
               asked: idempotency.RequestKey | None) -> tuple[Response, int, dict[str, str]]:
        order, message = handlers.place(fields, events.utc_now(), request_spans.current_traceparent())
        trace_context.update(order.order_id, message.message_id)
        publisher = app.extensions["publisher"]
        claimant = publisher.claimant() if publisher is not None else None
        if asked is None:
            pending = store.add(order, message, claimant)
        else:
            pending, earlier = store.add_keyed(order, message, claimant, asked)
            if earlier is not None:  # placed by another process a moment ago
                return _replay(earlier, asked)
        own_metrics.order_placed()
        logger.info("Order accepted: order_id=%s event_id=%s user=%s item=%s quantity=%d",
                    order.order_id, message.message_id, order.user_id, order.item, order.quantity)
        if publisher is not None:
            publisher.hand_over([pending] if claimant and pending else [])
        return (jsonify(handlers.accepted_body(order.order_id, order.created_at)), 202,
                {"Location": f"/orders/{order.order_id}"})

    def _replay(earlier: idempotency.Earlier,
                asked: idempotency.RequestKey) -> tuple[Response, int, dict[str, str]]:
        order_id = idempotency.replayed(earlier, asked).order_id
        own_metrics.order_replayed()
        logger.info("Order request replayed: order_id=%s idempotency_key=%r", order_id, asked.key)
        return (jsonify(handlers.accepted_body(order_id, earlier.created_at)), 202,
                {"Location": f"/orders/{order_id}", idempotency.REPLAYED: "true"})

    @app.get("/orders")
    def list_orders() -> Response:
        query = handlers.list_query(request.args)
        query = replace(query, user_id=access.visible_user(query.user_id, signin.caller()))
        return jsonify(store.find(query).body())

    @app.get("/orders/<order_id>")
    def get_order(order_id: str) -> Response | tuple[Response, int]:
        order = store.get(order_id) if events.storable_text(order_id) else None  # no such id stored
        if order is None or not access.may_read(order, signin.caller()):  # another's: as if missing
            return jsonify({"error": f"order {order_id} not found", "status": 404}), 404
        return jsonify(order.view())

    @app.get("/health")
    def health_check() -> tuple[Response, int]:
        return _health(store, app.extensions["publisher"])

    @app.get("/openapi.json")
    def description() -> Response:
        return jsonify(openapi.document(settings.max_body_bytes, signed_in=verifier is not None))

    exposition.instrument_flask(app, settings.metrics_port)
    signin.install(app, settings, verifier)  # after the metrics' clock starts, so a 401 is counted

    @app.errorhandler(InvalidRequest)
    def invalid(exc: InvalidRequest) -> tuple[Response, int]:
        return jsonify({"error": str(exc), "errors": exc.errors}), 400

    @app.errorhandler(idempotency.KeyInProgress)
    def key_in_progress(exc: idempotency.KeyInProgress) -> tuple[Response, int, dict[str, str]]:
        return jsonify({"error": f"{exc}; retry shortly", "status": 409}), 409, {"Retry-After": "1"}

    @app.errorhandler(idempotency.KeyReused)
    def key_reused(exc: idempotency.KeyReused) -> tuple[Response, int]:
        return jsonify({"error": f"{exc}; use a fresh key for a new order", "status": 422}), 422

    def database_unavailable(exc: Exception) -> tuple[Response, int, dict[str, str]]:
        logger.error("database unavailable: %s", exc)
        return (jsonify({"error": "the order database is busy or unavailable; retry shortly",
                         "status": 503}), 503, {"Retry-After": "1"})

    for transient in store.dialect.transient:  # locked or busy SQLite; a lost PostgreSQL link
        app.register_error_handler(transient, database_unavailable)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int, dict[str, str]]:
        headers = {name: value for name, value in exc.get_headers() if name != "Content-Type"}
        return jsonify({"error": exc.description, "status": exc.code}), exc.code or 500, headers

    return app


def _json_body() -> Any:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    try:
        return json.loads(request.get_data(cache=False))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest({"body": "must be valid JSON"}) from None


def _health(store: OrderStore, publisher: Publisher | None) -> tuple[Response, int]:
    """Healthy while orders can be stored; the broker may be away (the outbox keeps them)."""
    writable, backlog = store.health()
    status, body = health.report("order-service", writable, {
        "database": "writable" if writable else "unavailable",
        "broker": "connected" if publisher is not None and publisher.connected else "disconnected",
        "outbox_backlog": backlog,
    })
    return jsonify(body), status

