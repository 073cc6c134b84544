"""The rate limit of POST /order through Flask's test client, in memory (no server): the 429, that a
refused order changes nothing, whose budget a request spends, and the settings that choose it."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import g
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from messaging.observability import metrics
from messaging.settings import ConfigError, StorageSettings
from order_service import config, own_metrics
from order_service.app import create_app
from order_service.handlers import ListQuery
from order_service.store import OrderStore
from stack.processes import free_port
from tests.unit.test_order_app import VALID, Relay

CLIENT = "203.0.113.7"  # a client connecting directly (TEST-NET-3)
GATEWAY = "10.0.0.2"


def make_settings(tmp_path: Path, **fields) -> config.Settings:
    return config.Settings(storage=StorageSettings(data_dir=str(tmp_path), busy_timeout_ms=50),
                           **fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OrderStore]:
    store = OrderStore.open(make_settings(tmp_path).storage)
    yield store
    store.close()


@pytest.fixture
def counted() -> Iterator[metrics.Metrics]:
    active = own_metrics.configure(True, registry=CollectorRegistry())
    assert active is not None
    yield active
    metrics.configure(False)


def client_for(tmp_path: Path, store: OrderStore, signed_in: bool = False, **fields) -> FlaskClient:
    """An app with the given settings; with `signed_in`, a request's `X-Test-Subject` header plays
    the sign-in that sets g.subject."""
    app = create_app(make_settings(tmp_path, **fields), store, Relay())
    if signed_in:
        @app.before_request
        def sign_in() -> None:
            from flask import request
            if request.headers.get("X-Test-Subject"):
                g.subject = request.headers["X-Test-Subject"]
    return app.test_client()


def post(client: FlaskClient, peer: str = CLIENT, **headers: str):
    subject = headers.get("X-Test-Subject")  # a signed-in user orders for themselves
    body = {**VALID, "user_id": subject} if subject else VALID
    return client.post("/order", json=body, headers=headers, environ_base={"REMOTE_ADDR": peer})


def statuses(responses) -> list[int]:
    return [response.status_code for response in responses]


def test_a_burst_over_the_limit_gets_429s_and_places_no_order_for_them(tmp_path, store, counted):
    client = client_for(tmp_path, store, rate_limit_orders="3/minute")
    answers = [post(client) for _ in range(5)]
    assert statuses(answers) == [202, 202, 202, 429, 429]
    refused = answers[-1]
    assert refused.is_json
    body = refused.get_json()
    assert set(body) == {"error", "status"} and body["status"] == 429
    assert "too many orders" in body["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-Content-Type-Options"] == "nosniff", "the shared security headers"
    assert store.find(ListQuery()).count == 3
    assert store.outbox_backlog() == 3, "a refused order writes no outbox row"
    assert counted.own.rate_limited.labels("address")._value.get() == 2
    assert counted.own.placed._value.get() == 3


def test_without_a_limit_nothing_is_refused(tmp_path, store):
    client = client_for(tmp_path, store)
    assert set(statuses(post(client) for _ in range(25))) == {202}


def test_only_post_order_is_limited(tmp_path, store):
    client = client_for(tmp_path, store, rate_limit_orders="1/minute")
    assert statuses([post(client), post(client)]) == [202, 429]
    for _ in range(10):  # the page polls the board twice a second
        assert client.get("/orders/board", environ_base={"REMOTE_ADDR": CLIENT}).status_code == 200
        assert client.get("/orders", environ_base={"REMOTE_ADDR": CLIENT}).status_code == 200


def test_each_client_address_has_its_own_budget(tmp_path, store):
    client = client_for(tmp_path, store, rate_limit_orders="2/minute")
    assert statuses(post(client, CLIENT) for _ in range(3)) == [202, 202, 429]
    assert statuses(post(client, "198.51.100.4") for _ in range(3)) == [202, 202, 429]


def test_a_signed_in_user_spends_their_own_budget_wherever_they_come_from(tmp_path, store, counted):
    client = client_for(tmp_path, store, signed_in=True, rate_limit_orders="2/minute")
    alice = [post(client, peer, **{"X-Test-Subject": "alice"})
             for peer in (CLIENT, "198.51.100.4", "192.0.2.1")]
    assert statuses(alice) == [202, 202, 429], "one budget for alice across addresses"
    assert statuses(post(client, CLIENT, **{"X-Test-Subject": "bob"}) for _ in range(2)) == [202, 202]
    assert post(client, CLIENT).status_code == 202, "signed out, the address has its own budget"
    assert counted.own.rate_limited.labels("user")._value.get() == 1


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key(tmp_path, store):
    client = client_for(tmp_path, store, rate_limit_orders="2/minute",
                        trusted_proxies=config.networks(GATEWAY))
    answers = [post(client, CLIENT, **{"X-Forwarded-For": f"192.0.2.{n}"}) for n in range(4)]
    assert statuses(answers) == [202, 202, 429, 429]


def test_behind_a_trusted_gateway_each_forwarded_client_has_its_own_budget(tmp_path, store):
    client = client_for(tmp_path, store, rate_limit_orders="1/minute",
                        trusted_proxies=config.networks("10.0.0.0/24"))
    # What the gateway appends is believed; what the client wrote before it is not.
    first = [post(client, GATEWAY, **{"X-Forwarded-For": f"192.0.2.9, 198.51.100.{n}"})
             for n in range(3)]
    assert statuses(first) == [202, 202, 202]
    again = post(client, GATEWAY, **{"X-Forwarded-For": "203.0.113.50, 198.51.100.1"})
    assert again.status_code == 429, "the same client behind the gateway, whatever it forged"


def test_with_redis_unreachable_the_limit_is_kept_in_memory_with_a_warning(tmp_path, store, caplog):
    client = client_for(tmp_path, store, rate_limit_orders="2/minute",
                        redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING):
        assert statuses(post(client) for _ in range(3)) == [202, 202, 429]
    assert any("storage unreachable" in record.getMessage() for record in caplog.records)
    assert store.find(ListQuery()).count == 2


# --- the settings ---

def test_the_settings_are_read_and_checked_with_the_librarys_parser():
    settings = config.load({"RATE_LIMIT_ORDERS": "30/minute", "REDIS_URL": "redis://cache:6379/1",
                            "TRUSTED_PROXIES": "10.0.0.5, 172.28.0.0/24", "RATE_LIMIT_PREFIX": "x",
                            "METRICS_PORT": "9101"})
    assert settings.rate_limit_orders == "30/minute"
    assert settings.redis_url == "redis://cache:6379/1"
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.5/32", "172.28.0.0/24"]
    assert (settings.rate_limit_prefix, settings.metrics_port) == ("x", 9101)
    assert config.load({"RATE_LIMIT_ORDERS": "5 per second; 100/hour"}).rate_limit_orders
    unset = config.load({})
    assert (unset.rate_limit_orders, unset.redis_url, unset.trusted_proxies, unset.metrics_port) == (
        None, None, (), None)


@pytest.mark.parametrize("env, names", [
    ({"RATE_LIMIT_ORDERS": "lots"}, "RATE_LIMIT_ORDERS"),
    ({"RATE_LIMIT_ORDERS": "30/fortnight"}, "RATE_LIMIT_ORDERS"),
    ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL"),
    ({"REDIS_URL": "cache:6379"}, "REDIS_URL"),
    ({"TRUSTED_PROXIES": "10.0.0.5, gateway"}, "TRUSTED_PROXIES"),
    ({"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"),
    ({"METRICS_PORT": "8101"}, "METRICS_PORT"),
    ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
    ({"RATE_LIMIT_PREFIX": ""}, "RATE_LIMIT_PREFIX"),
])
def test_a_bad_value_is_a_configuration_error_naming_the_setting(env, names):
    with pytest.raises(ConfigError, match=names):
        config.load(env)


def test_a_retry_with_an_idempotency_key_spends_budget_and_is_refused_over_the_limit(tmp_path, store):
    client = client_for(tmp_path, store, rate_limit_orders="1/minute")
    first = post(client, **{"Idempotency-Key": "retry-1"})
    assert first.status_code == 202
    again = post(client, **{"Idempotency-Key": "retry-1"})
    assert again.status_code == 429 and "Idempotent-Replayed" not in again.headers
    assert store.find(ListQuery()).count == 1
