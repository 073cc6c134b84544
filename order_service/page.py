"""The order page's HTTP shell: `GET /` and its static files, and `GET /orders/board` it polls.

The page is plain HTML, CSS and JavaScript from `order_service/static/`: no build step, nothing
from another origin. It polls the board every half second with `If-None-Match`; an unchanged
board costs a few index lookups and an empty 304, and no request waits, so no gunicorn thread is
held between polls.
"""
from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, Response, current_app, jsonify, request

from messaging.observability import health
from order_service import access, board, signin

# Everything from this origin only, and nothing inline: no inline script, style or handler.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
    "connect-src 'self'", "form-action 'self'", "base-uri 'none'", "frame-ancestors 'none'",
])
# Every response's headers (messaging.observability.health), with the page's own, wider policy.
SECURITY_HEADERS = {**health.SECURITY_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}

page = Blueprint("page", __name__, static_folder="static", static_url_path="/static")


@page.record_once
def _counts(state) -> None:
    store = state.app.extensions["order_store"]
    state.app.extensions["board_counts"] = board.CachedCounts(
        lambda user_id: store.status_counts() if user_id is None else store.status_counts_of(user_id))


@page.after_request
def secure(response: Response) -> Response:
    """Send the page's security headers with everything the blueprint serves."""
    response.headers.update(SECURITY_HEADERS)
    return response


@page.get("/")
def index() -> Response:
    """The page itself."""
    response = page.send_static_file("index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@page.get("/orders/board")
def order_board() -> Response:
    """The newest orders, counts per status, broker link and outbox backlog; 304 if unchanged."""
    query = board.board_query(request.args)
    query = replace(query, user_id=access.visible_user(query.user_id, signin.caller()))
    store, publisher = current_app.extensions["order_store"], current_app.extensions["publisher"]
    # The validator before the rows: a change committed in between makes the body newer than
    # its ETag, which costs the page one more full answer, never a missed change.
    marks = store.change_marks(query.user_id)
    counts = current_app.extensions["board_counts"].get(query.user_id)
    state = board.summary(counts, publisher is not None and publisher.connected,
                          store.outbox_backlog(), marks)
    headers = {"ETag": f'"{state.etag}"', "Cache-Control": "no-cache"}
    if request.if_none_match.contains(state.etag):
        return Response(status=304, headers=headers)
    body = board.board_body(query, state, store.latest(query.user_id, query.limit))
    response = jsonify(body)
    response.headers.update(headers)
    return response
