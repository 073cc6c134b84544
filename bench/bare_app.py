"""The HTTP baseline: POST /order answering OrderService's 202 body, with no database and no broker.

It runs under the same gunicorn settings as OrderService (same worker class, WEB_CONCURRENCY
workers, WEB_THREADS threads, keep-alive), so the difference between the two is what OrderService
does per order. Start it as `python -m bench.bare_app` (PORT, WEB_CONCURRENCY, WEB_THREADS).
"""
from __future__ import annotations

import json
import sys
import uuid

from flask import Flask, Response, jsonify, request

from messaging.events import utc_now
from order_service import config
from order_service.__main__ import OrderServiceApplication
from order_service.handlers import ACCEPTED, ACCEPTED_MESSAGE


def create_app() -> Flask:
    """A Flask app that parses the order body and answers 202 like OrderService does."""
    app = Flask(__name__)

    @app.post("/order")
    def place_order() -> tuple[Response, int, dict[str, str]]:
        json.loads(request.get_data(cache=False))
        order_id = str(uuid.uuid4())
        body = {"order_id": order_id, "status": ACCEPTED, "message": ACCEPTED_MESSAGE,
                "timestamp": utc_now()}
        return jsonify(body), 202, {"Location": f"/orders/{order_id}"}

    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "healthy", "service": "bare-endpoint"})

    return app


class BareApplication(OrderServiceApplication):
    """OrderService's gunicorn configuration serving the bare app, without relay or consumer."""

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("post_worker_init", lambda worker: None)
        self.cfg.set("worker_exit", lambda server, worker: None)

    def load(self) -> Flask:
        return create_app()


def main() -> int:
    settings = config.load()
    BareApplication(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
