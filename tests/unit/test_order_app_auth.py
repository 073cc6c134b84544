"""OrderService with AUTH=oidc through Flask's test client: the caller comes from a bearer token
minted by a provider of the test's own (tests/identity.py), served over HTTP on 127.0.0.1."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import flask
import pytest
from flask.testing import FlaskClient

from messaging.settings import StorageSettings
from order_service import config
from order_service.app import create_app
from order_service.store import OrderStore
from tests.identity import IdentityProvider
from tests.unit.test_order_app import Relay

ORDER = {"item": "Burger", "quantity": 2}


@pytest.fixture
def settings(tmp_path: Path, idp: IdentityProvider) -> config.Settings:
    return config.Settings(storage=StorageSettings(data_dir=str(tmp_path), busy_timeout_ms=50),
                           auth="oidc", oidc_issuer=idp.issuer, oidc_audience=idp.audience,
                           oidc_jwks_cooldown=0.0)


@pytest.fixture
def store(settings: config.Settings) -> Iterator[OrderStore]:
    store = OrderStore.open(settings.storage)
    yield store
    store.close()


@pytest.fixture
def client(settings, store) -> FlaskClient:
    return create_app(settings, store, Relay()).test_client()


def as_user(idp: IdentityProvider, sub: str, *roles: str) -> dict[str, str]:
    return idp.headers(sub=sub, roles=roles)


def place(client: FlaskClient, idp: IdentityProvider, sub: str, **body) -> str:
    response = client.post("/order", json={**ORDER, **body}, headers=as_user(idp, sub))
    assert response.status_code == 202, response.get_json()
    return response.get_json()["order_id"]


def users_in(response) -> set[str]:
    return {order["user_id"] for order in response.get_json()["orders"]}


# --- 401 ---

@pytest.mark.parametrize("path", ["/orders", "/orders/board", "/orders/some-id", "/me"])
def test_an_order_route_without_a_token_is_a_401_with_a_bearer_challenge(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="order-service"'
    assert response.get_json() == {"error": "a bearer token is required", "status": 401}


def test_posting_without_a_token_is_a_401_and_stores_nothing(client, store):
    assert client.post("/order", json={**ORDER, "user_id": "alice"}).status_code == 401
    assert store.outbox_backlog() == 0


def test_a_refused_token_says_invalid_token(client, idp):
    response = client.get("/orders", headers=idp.headers(lifetime=-3600))
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="order-service", error="invalid_token", error_description=')
    assert response.get_json()["status"] == 401


@pytest.mark.parametrize("path", ["/", "/static/page.js", "/openapi.json", "/health", "/metrics"])
def test_the_page_its_files_the_description_health_and_metrics_need_no_token(client, path):
    response = client.get(path)
    assert response.status_code == (404 if path == "/metrics" else 200)  # no metrics registry here
    assert "WWW-Authenticate" not in response.headers


def test_health_says_nothing_about_callers_or_the_provider(client, idp):
    body = client.get("/health", headers=as_user(idp, "alice")).get_json()
    assert set(body) == {"status", "service", "database", "broker", "outbox_backlog"}
    assert "alice" not in str(body) and idp.issuer not in str(body)


def test_an_unreachable_provider_is_a_503_not_a_401(tmp_path, store):
    gone = IdentityProvider()
    headers = gone.headers()
    gone.close()
    settings = config.Settings(storage=StorageSettings(data_dir=str(tmp_path)), auth="oidc",
                               oidc_issuer=gone.issuer, oidc_audience=gone.audience)
    response = create_app(settings, store, Relay()).test_client().get("/orders", headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["status"] == 503


# --- the caller ---

def test_the_caller_is_in_flask_g(client, idp):
    with client:
        client.get("/me", headers=as_user(idp, "alice"))
        assert (flask.g.subject, flask.g.staff) == ("alice", False)
        client.get("/me", headers=as_user(idp, "carol", "staff"))
        assert (flask.g.subject, flask.g.staff) == ("carol", True)


def test_with_auth_off_the_caller_is_nobody_who_sees_everything(settings, store):
    client = create_app(replace(settings, auth="off"), store, Relay()).test_client()
    with client:
        response = client.get("/me")
        assert (flask.g.subject, flask.g.staff) == (None, True)
    assert response.get_json() == {"user_id": None, "staff": True, "auth": "off"}


def test_me_names_the_signed_in_user(client, idp):
    assert client.get("/me", headers=as_user(idp, "alice")).get_json() == {
        "user_id": "alice", "staff": False, "auth": "oidc"}
    assert client.get("/me", headers=as_user(idp, "carol", "staff")).get_json()["staff"] is True


def test_the_staff_role_and_claim_are_settings(settings, store, idp):
    client = create_app(replace(settings, oidc_roles_claim="realm_access.roles", oidc_staff_role="kitchen"),
                        store, Relay()).test_client()
    token = idp.token(sub="dana", realm_access={"roles": ["kitchen"]})
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).get_json()["staff"] is True
    assert client.get("/me", headers=as_user(idp, "erin", "staff")).get_json()["staff"] is False


# --- placing orders ---

def test_an_order_without_user_id_is_the_subjects(client, idp, store):
    assert store.get(place(client, idp, "alice")).user_id == "alice"


def test_an_order_naming_the_subject_is_accepted(client, idp, store):
    assert store.get(place(client, idp, "alice", user_id="alice")).user_id == "alice"


@pytest.mark.parametrize("roles", [(), ("staff",)])
def test_an_order_for_someone_else_is_a_403_and_stores_nothing(client, idp, store, roles):
    response = client.post("/order", json={**ORDER, "user_id": "bob"}, headers=as_user(idp, "alice", *roles))
    assert response.status_code == 403
    assert response.get_json() == {"error": "user_id must be your own (alice) or left out", "status": 403}
    assert store.outbox_backlog() == 0


def test_a_bad_body_is_still_a_400_before_whose_it_is(client, idp):
    response = client.post("/order", json={"user_id": "bob", "quantity": 0}, headers=as_user(idp, "alice"))
    assert response.status_code == 400
    assert set(response.get_json()["errors"]) == {"item", "quantity"}


# --- reading orders ---

@pytest.fixture
def orders(client, idp) -> dict[str, str]:
    return {user: place(client, idp, user) for user in ("alice", "bob")}


def test_a_student_lists_only_their_own_orders(client, idp, orders):
    assert users_in(client.get("/orders", headers=as_user(idp, "alice"))) == {"alice"}
    assert users_in(client.get("/orders?user_id=alice", headers=as_user(idp, "alice"))) == {"alice"}


def test_a_student_asking_for_someone_elses_list_is_a_403(client, idp, orders):
    response = client.get("/orders?user_id=bob", headers=as_user(idp, "alice"))
    assert response.status_code == 403
    assert response.get_json() == {"error": "you may list only your own orders", "status": 403}


def test_staff_list_everyones_orders_or_one_users(client, idp, orders):
    staff = as_user(idp, "carol", "staff")
    assert users_in(client.get("/orders", headers=staff)) == {"alice", "bob"}
    assert users_in(client.get("/orders?user_id=bob", headers=staff)) == {"bob"}


def test_someone_elses_order_is_a_404_like_a_missing_one(client, idp, orders):
    alice = as_user(idp, "alice")
    assert client.get(f"/orders/{orders['alice']}", headers=alice).status_code == 200
    theirs = client.get(f"/orders/{orders['bob']}", headers=alice)
    missing = client.get("/orders/00000000-0000-0000-0000-000000000000", headers=alice)
    assert (theirs.status_code, missing.status_code) == (404, 404)
    assert theirs.get_json() == {"error": f"order {orders['bob']} not found", "status": 404}


def test_staff_read_anyones_order(client, idp, orders):
    response = client.get(f"/orders/{orders['bob']}", headers=as_user(idp, "carol", "staff"))
    assert response.status_code == 200 and response.get_json()["user_id"] == "bob"


def test_a_students_board_is_their_own(client, idp, orders):
    body = client.get("/orders/board", headers=as_user(idp, "alice")).get_json()
    assert body["user_id"] == "alice" and users_in_board(body) == {"alice"}
    assert body["count"] == 1
    assert client.get("/orders/board?user_id=bob", headers=as_user(idp, "alice")).status_code == 403


def test_staff_see_the_whole_board(client, idp, orders):
    body = client.get("/orders/board", headers=as_user(idp, "carol", "staff")).get_json()
    assert body["user_id"] is None and users_in_board(body) == {"alice", "bob"}
    assert body["count"] == 2


def users_in_board(body: dict) -> set[str]:
    return {order["user_id"] for order in body["orders"]}
