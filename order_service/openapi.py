"""OrderService's OpenAPI 3.1 description, built from the limits the validators enforce.

Every route of `app.py` is described here (tests/unit/test_openapi.py fails on a route that is not,
and on a documented limit the validator does not enforce), and `GET /openapi.json` serves it.
"""
from __future__ import annotations

import functools
from typing import Any

from messaging.events import MAX_QUANTITY, MAX_REASON_LENGTH, MAX_TEXT_LENGTH, is_hidden
from order_service import board, config, handlers, idempotency

JSON = "application/json"
# What str.strip() removes, so what order_field_errors reads as empty. Spelled out rather than `\s`,
# whose meaning differs between Python, ECMA-262 and Rust regex engines.
WHITESPACE = ((0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
              (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))


def _char(code: int) -> str:
    """One character of a pattern's class: escaped in the BMP, itself beyond (no engine-specific
    escape for astral code points)."""
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return "".join(_char(low) + (f"-{_char(high)}" if high > low else "") for low, high in ranges)


@functools.cache
def _hidden() -> str:
    """The characters order_field_errors refuses (events.is_hidden), as a pattern's class ranges."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        if not is_hidden(chr(code)):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return _ranges(ranges)


@functools.cache
def text_pattern() -> str:
    """Not only whitespace, and none of the hidden characters (NUL among them).

    The look-ahead refuses a newline anywhere, as the class does: Python's `$` (which jsonschema
    uses) also matches just before a final newline, so the class alone would let "a\\n" through.
    """
    hidden = _hidden()
    return f"^(?!.*\\n)[^{hidden}]*[^{hidden}{_ranges(list(WHITESPACE))}][^{hidden}]*$"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH, "pattern": text_pattern(),
            "description": f"{description}: not only whitespace; no control or format characters "
                           "(Unicode Cc, Cf but ZWNJ and ZWJ, Zl, Zp), so no NUL"}


def _schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "description": "ISO-8601 UTC, ending in Z"}
    order_fields = {"user_id": _text("who orders"), "item": _text("what is ordered"),
                    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}}
    return {
        "NewOrder": {
            "type": "object", "properties": order_fields, "required": list(order_fields),
            "additionalProperties": False, "description": "Unknown fields are a 400.",
            "examples": [{"user_id": "user123", "item": "Burger", "quantity": 2}]},
        "Accepted": {
            "type": "object", "additionalProperties": False,
            "required": ["order_id", "status", "message", "timestamp"],
            "properties": {"order_id": {"type": "string", "format": "uuid"},
                           "status": {"const": handlers.ACCEPTED},
                           "message": {"const": handlers.ACCEPTED_MESSAGE},
                           "timestamp": timestamp}},
        "Order": {
            "type": "object", "additionalProperties": False,
            "required": ["order_id", "user_id", "item", "quantity", "status", "created_at",
                         "updated_at"],
            "properties": {"order_id": {"type": "string", "format": "uuid"},
                           "user_id": {"type": "string"}, "item": {"type": "string"},
                           "quantity": {"type": "integer"},
                           "status": {"enum": list(handlers.STATUSES)},
                           "created_at": timestamp, "updated_at": timestamp,
                           "reason": {"type": "string", "maxLength": MAX_REASON_LENGTH,
                                      "description": "why the order failed (failed only)"}}},
        "OrderPage": {
            "type": "object", "additionalProperties": False,
            "required": ["orders", "next", "count", "count_capped"],
            "properties": {"orders": {"type": "array", "items": _ref("schemas", "Order"),
                                      "maxItems": handlers.MAX_LIMIT},
                           "next": {"type": ["string", "null"], "pattern": "^[1-9][0-9]*$",
                                    "description": "the next page's `before`; null on the last page"},
                           "count": {"type": "integer", "minimum": 0, "maximum": handlers.COUNT_LIMIT,
                                     "description": "orders matching the filters, all pages, counted "
                                                    f"up to {handlers.COUNT_LIMIT}"},
                           "count_capped": {"type": "boolean",
                                            "description": f"more than {handlers.COUNT_LIMIT} match"}}},
        "Health": {
            "type": "object", "additionalProperties": False,
            "required": ["status", "service", "database", "broker", "outbox_backlog"],
            "properties": {"status": {"enum": ["healthy", "unhealthy"]},
                           "service": {"const": "order-service"},
                           "database": {"enum": ["writable", "unavailable"]},
                           "broker": {"enum": ["connected", "disconnected"]},
                           "outbox_backlog": {"type": ["integer", "null"], "minimum": 0}}},
        "Board": {
            "type": "object", "additionalProperties": False,
            "required": ["user_id", "orders", "count", "counts", "broker", "outbox_backlog"],
            "properties": {"user_id": {"type": ["string", "null"]},
                           "orders": {"type": "array", "items": _ref("schemas", "Order"),
                                      "maxItems": board.MAX_ROWS},
                           "count": {"type": "integer", "minimum": 0},
                           "counts": {"type": "object", "additionalProperties": False,
                                      "required": list(handlers.STATUSES),
                                      "properties": {status: {"type": "integer", "minimum": 0}
                                                     for status in handlers.STATUSES},
                                      "description": "per status, up to a second old"},
                           "broker": {"enum": ["connected", "disconnected"]},
                           "outbox_backlog": {"type": "integer", "minimum": 0}}},
        "Me": {
            "type": "object", "additionalProperties": False, "required": ["user_id", "staff", "auth"],
            "properties": {"user_id": {"type": ["string", "null"],
                                       "description": "the token's subject; null with AUTH=off"},
                           "staff": {"type": "boolean",
                                     "description": "sees everyone's orders (always, with AUTH=off)"},
                           "auth": {"enum": ["off", "oidc"]}}},
        "InvalidRequest": {
            "type": "object", "additionalProperties": False, "required": ["error", "errors"],
            "description": "`error` repeats the first problem; `errors` has one per bad field.",
            "properties": {"error": {"type": "string"},
                           "errors": {"type": "object", "minProperties": 1,
                                      "additionalProperties": {"type": "string"}}}},
        "Error": {
            "type": "object", "additionalProperties": False, "required": ["error", "status"],
            "properties": {"error": {"type": "string"},
                           "status": {"type": "integer", "minimum": 400, "maximum": 599}}},
    }


def _responses() -> dict[str, Any]:
    error, invalid = _ref("schemas", "Error"), _ref("schemas", "InvalidRequest")
    header = {"schema": {"type": "string"}, "required": True}
    return {
        "InvalidRequest": _json(invalid, "Bad request: every problem, by field or parameter"),
        "NotFound": _json(error, "No such order or path"),
        "MethodNotAllowed": _json(error, "A method this path does not serve",
                                  headers={"Allow": {**header, "description": "the methods it does"}}),
        "TooLarge": _json(error, "The body is larger than the limit"),
        "URITooLong": {"description": f"The request line (method, path and query) is longer than "
                                      f"{config.MAX_REQUEST_LINE} bytes: gunicorn answers, in HTML, "
                                      "before the app sees the request",
                       "content": {"text/html": {"schema": {"type": "string"}}}},
        "UnsupportedMediaType": _json(error, f"The Content-Type is not {JSON}"),
        "Unavailable": _json(error, "The order database, or the sign-in provider's keys, are busy or "
                                    "unavailable; retry shortly",
                             headers={"Retry-After": {**header, "description": "seconds"}}),
        "KeyInProgress": _json(error, "The first request with this Idempotency-Key is still being "
                                      "placed; retry shortly",
                               headers={"Retry-After": {**header, "description": "seconds"}}),
        "KeyReused": _json(error, "This Idempotency-Key placed a different order; a new order "
                                  "needs a fresh key"),
        "TooManyRequests": _json(
            error, "Over the rate limit (RATE_LIMIT_ORDERS; per signed-in user, else per client "
                   "address); nothing was placed",
            headers={"Retry-After": {"schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
                                     "required": True,
                                     "description": "whole seconds until the budget has room"}}),
        "Unauthorized": _json(error, "No bearer token, or one that is not valid (signature, issuer, "
                                     "audience, expiry, algorithm)", headers={"WWW-Authenticate": {
                                         **header, "description": 'Bearer realm="order-service"'
                                         ', with error="invalid_token" when a token was refused'}}),
        "Forbidden": _json(error, "The request names a user other than the signed-in one"),
    }


ERRORS = {"400": "InvalidRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound",
          "409": "KeyInProgress", "413": "TooLarge", "415": "UnsupportedMediaType", "422": "KeyReused",
          "429": "TooManyRequests", "503": "Unavailable"}


def _operation(operation_id: str, summary: str, answers: dict[str, Any], *errors: str,
               **extra: Any) -> dict[str, Any]:
    responses = {**answers, **{code: _ref("responses", ERRORS[code]) for code in errors},
                 "405": _ref("responses", "MethodNotAllowed"), "414": _ref("responses", "URITooLong")}
    return {"operationId": operation_id, "summary": summary, **extra, "responses": responses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _accepted() -> dict[str, Any]:
    location = {"Location": {"schema": {"type": "string"}, "required": True,
                             "description": "/orders/{order_id} of the new order"},
                idempotency.REPLAYED: {"schema": {"const": "true"}, "required": False,
                                       "description": "present on the original answer sent again "
                                                      "to a retry with the same Idempotency-Key"}}
    links = {"GetOrder": {"operationId": "getOrder",
                          "parameters": {"order_id": "$response.body#/order_id"}},
             "ListUserOrders": {"operationId": "listOrders",
                                "parameters": {"user_id": "$request.body#/user_id"}}}
    return _json(_ref("schemas", "Accepted"), "Accepted; the status changes asynchronously",
                 headers=location, links=links)


def _paths(max_body_bytes: int) -> dict[str, Any]:
    body = {"required": True, "content": {JSON: {"schema": _ref("schemas", "NewOrder")}},
            "description": f"A JSON object of at most {max_body_bytes} bytes (else 413)",
            "x-max-body-bytes": max_body_bytes}
    page = [_query("status", {"enum": list(handlers.STATUSES)}, "only orders in this status"),
            _query("user_id", {"type": "string", "pattern": "^[^\\u0000]*$"},
                   "only this user's orders (empty: all users)"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": handlers.MAX_LIMIT,
                             "default": handlers.DEFAULT_LIMIT}, "page size"),
            _query("offset", {"type": "integer", "minimum": 0, "maximum": handlers.MAX_OFFSET,
                              "default": 0}, "orders to skip (bounded: page deeper with `before`)"),
            _query("before", {"type": "integer", "minimum": 1, "maximum": handlers.MAX_CURSOR},
                   "the cursor: `next` of the previous page; only orders older than it")]
    order_id = {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}
    etag = {"ETag": {"schema": {"type": "string"}, "required": True,
                     "description": "send it back in If-None-Match"}}
    traceparent = {"name": "traceparent", "in": "header", "required": False,
                   "schema": {"type": "string"},
                   "description": "W3C trace context to continue; absent or invalid: a new trace"}
    key_chars = "[!#-\\[\\]-~]{1," + str(idempotency.MAX_KEY_LENGTH) + "}"
    idempotency_key = {
        "name": idempotency.HEADER, "in": "header", "required": False,
        "schema": {"type": "string", "pattern": f'^(?!.*\\n)({key_chars}|"{key_chars}")$'},
        "description": "A fresh key (a UUID, say) per new order, the same one for each retry of "
                       f"it: within {idempotency.DEFAULT_WINDOW / 3600:g} hours (IDEMPOTENCY_RETENTION) "
                       "a retry is answered with the original 202, never a second order. Scoped "
                       "to the caller. Bare, or a Structured Field string (quoted)."}
    health = {"200": _json(_ref("schemas", "Health"), "The database is writable"),
              "503": _json(_ref("schemas", "Health"), "The database is not writable")}
    return {
        "/order": {"post": _operation("placeOrder", "Place an order", {"202": _accepted()},
                                      "400", "409", "413", "415", "422", "429", "503", requestBody=body,
                                      parameters=[traceparent, idempotency_key])},
        "/orders": {"get": _operation(
            "listOrders", "List orders, newest first",
            {"200": _json(_ref("schemas", "OrderPage"), "A page")}, "400", "503", parameters=page)},
        "/orders/{order_id}": {"get": _operation(
            "getOrder", "One order", {"200": _json(_ref("schemas", "Order"), "The order")},
            "404", "503", parameters=[order_id])},
        "/health": {"get": _operation("health", "Health", health)},
        "/me": {"get": _operation("me", "Who is signed in (the page shows it)",
                                  {"200": _json(_ref("schemas", "Me"), "The caller")})},
        "/": {"get": _operation("page", "The order page", {"200": {
            "description": "HTML; its script polls GET /orders/board",
            "content": {"text/html": {"schema": {"type": "string"}}}}})},
        "/static/{filename}": {"get": _operation(
            "pageFile", "The page's stylesheet, script and icon", {"200": {
                "description": "A file of the page",
                "content": {media: {"schema": {"type": "string"}} for media in
                            ("text/css", "text/javascript", "image/svg+xml")}}},
            "404", parameters=[{"name": "filename", "in": "path", "required": True,
                                "schema": {"type": "string"}}])},
        "/orders/board": {"get": _operation(
            "orderBoard", "The page's board: newest orders, counts per status, broker, backlog",
            {"200": _json(_ref("schemas", "Board"), "The board", headers=etag),
             "304": {"description": "Unchanged since the ETag in If-None-Match",
                     "headers": etag}},
            "400", "503", parameters=[
                _query("user_id", {"type": "string", "pattern": "^[^\\u0000]*$"},
                       "only this user's orders (empty: all)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": board.MAX_ROWS,
                                 "default": board.DEFAULT_ROWS}, "newest orders to show"),
                {"name": "If-None-Match", "in": "header", "required": False,
                 "schema": {"type": "string"}, "description": "the ETag of the last answer"}])},
        "/metrics": {"get": _operation(
            "metrics", "Counters, gauges and histograms in the Prometheus text format",
            {"200": {"description": "Every worker's figures (404 when METRICS=off, and on the "
                                    "API's port when METRICS_PORT is set: then served there only)",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}}, "404")},
        "/openapi.json": {"get": _operation(
            "openapi", "This description", {"200": _json({"type": "object"}, "OpenAPI 3.1")})},
    }


# With AUTH=oidc: the operations that need a bearer token, and the refusals each may answer.
SIGNED_IN = {"placeOrder": ("401", "403", "503"), "listOrders": ("401", "403", "503"),
             "getOrder": ("401", "503"), "orderBoard": ("401", "403", "503"), "me": ("401", "503")}
BEARER = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
          "description": "An access token of the campus's OpenID Connect provider (OIDC_ISSUER) for "
                         "OIDC_AUDIENCE, signed with one of its published keys (RS*, PS*, ES*, EdDSA)"}


def _require_sign_in(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Name the bearer scheme on every operation that needs it, with its 401 and 403; the others
    need none. A signed-in caller's order may leave `user_id` out (it is the token's subject)."""
    for item in paths.values():
        for operation in item.values():
            refusals = SIGNED_IN.get(operation["operationId"])
            operation["security"] = [{"bearer": []}] if refusals else []
            for code in refusals or ():
                operation["responses"].setdefault(code, _ref("responses", ERRORS[code]))
    new_order = schemas["NewOrder"]
    new_order["required"] = [field for field in new_order["required"] if field != "user_id"]
    new_order["description"] += " `user_id` may be left out: it is the signed-in user's."


def document(max_body_bytes: int, signed_in: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of OrderService with a body limit of `max_body_bytes`; `signed_in`
    (AUTH=oidc) adds the bearer scheme and its answers."""
    paths, schemas = _paths(max_body_bytes), _schemas()
    components: dict[str, Any] = {"schemas": schemas, "responses": _responses()}
    if signed_in:
        _require_sign_in(paths, schemas)
        components["securitySchemes"] = {"bearer": BEARER}
    return {
        "openapi": "3.1.0",
        "info": {"title": "OrderService", "version": "1.0.0",
                 "description": "Campus food ordering: orders are accepted at once and completed "
                                "asynchronously through RabbitMQ."},
        "paths": paths,
        "components": components,
    }
