"""METRICS_PORT: /metrics served on its own port only, and nothing else there.

The listening port is read from the connection's socket (gunicorn) or SERVER_PORT, never from the
Host header a client writes; tests/integration/test_metrics_port.py checks it under gunicorn.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from messaging.observability import metrics
from messaging.observability.exposition import listener_port, on_its_door
from messaging.settings import StorageSettings
from order_service import config, own_metrics
from order_service.app import create_app
from order_service.store import OrderStore
from tests.unit.test_order_app import Relay


@pytest.mark.parametrize("path, port, metrics_port, served", [
    ("/metrics", 8101, None, True),
    ("/order", 8101, None, True),
    ("/metrics", 8101, 9101, False),
    ("/metrics", 9101, 9101, True),
    ("/order", 9101, 9101, False),
    ("/health", 9101, 9101, False),
    ("/health", 8101, 9101, True),
    ("/metrics", None, 9101, False),
])
def test_on_its_door(path, port, metrics_port, served):
    assert on_its_door(path, port, metrics_port) is served


def test_the_listener_port_comes_from_the_socket_before_server_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert listener_port({"gunicorn.socket": sock, "SERVER_PORT": "1"}) == port
    assert listener_port({"SERVER_PORT": "8101"}) == 8101
    assert listener_port({"SERVER_PORT": ""}) is None
    assert listener_port({}) is None


def test_the_app_serves_metrics_only_on_the_metrics_port(tmp_path: Path):
    settings = config.Settings(storage=StorageSettings(data_dir=str(tmp_path)), metrics_port=9101)
    store = OrderStore.open(settings.storage)
    own_metrics.configure(True, registry=CollectorRegistry())
    try:
        client = create_app(settings, store, Relay()).test_client()
        public, private = "http://localhost:8101", "http://localhost:9101"
        refused = client.get("/metrics", base_url=public)
        assert refused.status_code == 404 and refused.get_json()["status"] == 404
        assert client.get("/metrics", base_url=public,
                          headers={"Host": "localhost:9101"}).status_code == 404
        served = client.get("/metrics", base_url=private)
        assert served.status_code == 200 and b"orders_placed_total" in served.data
        assert client.get("/health", base_url=public).status_code == 200
        assert client.get("/health", base_url=private).status_code == 404
        assert client.post("/order", base_url=private, json={}).status_code == 404
    finally:
        metrics.configure(False)
        store.close()
