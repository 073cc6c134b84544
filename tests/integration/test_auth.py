"""OrderService with AUTH=oidc as a real process (`python -m order_service`), verifying tokens of a
provider of the test's own: keys minted here, discovery document and JWKS served on 127.0.0.1.

OrderService discovers the JWKS from OIDC_ISSUER, as it would against the campus's provider.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from stack.broker import Broker
from stack.processes import Stack
from tests.client import wait_for
from tests.identity import DISCOVERY, JWKS, IdentityProvider


@pytest.fixture(scope="module")
def stack(broker: Broker, idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """OrderService (AUTH=oidc) and InventoryService in a vhost of their own, for the module."""
    vhost = broker.create_vhost("auth")
    stack = Stack(vhost, Path(tmp_path_factory.mktemp("auth")), RABBITMQ_HOST=broker.host,
                  RABBITMQ_PORT=str(broker.port), AUTH="oidc", OIDC_ISSUER=idp.issuer,
                  OIDC_AUDIENCE=idp.audience, OIDC_JWKS_COOLDOWN="0.2")
    try:
        yield stack.start("order", "inventory")
    finally:
        stack.close()
        broker.delete_vhost(vhost)


def call(stack: Stack, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{stack.order_url}{path}", headers=headers, timeout=10, **kwargs)


def assert_refused(response: requests.Response, invalid_token: bool = True) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["status"] == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="order-service"')
    assert ('error="invalid_token"' in challenge) is invalid_token


def test_a_signed_in_student_orders_as_themselves_and_the_order_is_reserved(stack, idp):
    token = idp.token(sub="alice")
    response = call(stack, "POST", "/order", token, json={"item": "Burger", "quantity": 1})
    assert response.status_code == 202, response.text
    order_id = response.json()["order_id"]
    order = wait_for(lambda: (o := call(stack, "GET", f"/orders/{order_id}", token).json())["status"]
                     != "accepted" and o, what="the order to be decided")
    assert (order["status"], order["user_id"]) == ("reserved", "alice")
    assert idp.hits[DISCOVERY] == 1, "the JWKS URL was discovered from the issuer"


def test_no_token_is_a_401_and_the_public_routes_need_none(stack):
    assert_refused(call(stack, "GET", "/orders"), invalid_token=False)
    assert_refused(call(stack, "POST", "/order", json={"user_id": "x", "item": "Burger", "quantity": 1}),
                   invalid_token=False)
    for path in ("/", "/static/page.js", "/openapi.json", "/health", "/metrics"):
        assert call(stack, "GET", path).status_code == 200, path
    health = call(stack, "GET", "/health").json()
    assert set(health) == {"status", "service", "database", "broker", "outbox_backlog"}


@pytest.mark.parametrize("forge", [
    pytest.param(lambda idp: idp.token(lifetime=-3600), id="expired"),
    pytest.param(lambda idp: idp.token(aud="another-service"), id="wrong-audience"),
    pytest.param(lambda idp: idp.token(iss="https://elsewhere.example"), id="wrong-issuer"),
    pytest.param(lambda idp: idp.alg_none_token(), id="alg-none"),
    pytest.param(lambda idp: idp.hmac_token(), id="hmac-with-the-public-key"),
])
def test_a_forged_or_stale_token_is_refused(stack, idp, forge):
    assert_refused(call(stack, "GET", "/orders", forge(idp)))
    assert_refused(call(stack, "POST", "/order", forge(idp), json={"item": "Burger", "quantity": 1}))


def test_a_rotated_key_is_picked_up_without_a_restart(stack, idp):
    assert call(stack, "GET", "/me", idp.token(sub="alice")).status_code == 200
    old, fetched = idp.token(sub="alice"), idp.hits[JWKS]
    idp.rotate()
    new = idp.token(sub="alice")
    # The unknown kid refetches the keys once the cooldown (0.2 s here) has passed since the last fetch.
    wait_for(lambda: call(stack, "GET", "/me", new).status_code == 200, what="the new key to be used")
    assert idp.hits[JWKS] > fetched
    assert_refused(call(stack, "GET", "/me", old))
    assert stack["order"].running


def test_a_student_sees_only_their_own_orders_and_staff_see_everyones(stack, idp):
    alice, bob, staff = idp.token(sub="alice"), idp.token(sub="bob"), idp.token(sub="carol", roles=("staff",))
    bobs = call(stack, "POST", "/order", bob, json={"item": "Pizza", "quantity": 1}).json()["order_id"]
    call(stack, "POST", "/order", alice, json={"item": "Salad", "quantity": 1})

    theirs = call(stack, "GET", f"/orders/{bobs}", alice)
    assert theirs.status_code == 404
    assert theirs.json() == {"error": f"order {bobs} not found", "status": 404}
    assert {o["user_id"] for o in call(stack, "GET", "/orders", alice).json()["orders"]} == {"alice"}
    assert call(stack, "GET", "/orders?user_id=bob", alice).status_code == 403
    assert call(stack, "POST", "/order", alice, json={"user_id": "bob", "item": "Burger",
                                                      "quantity": 1}).status_code == 403
    assert {o["user_id"] for o in call(stack, "GET", "/orders/board", alice).json()["orders"]} == {"alice"}

    assert call(stack, "GET", f"/orders/{bobs}", staff).json()["user_id"] == "bob"
    assert {"alice", "bob"} <= {o["user_id"] for o in call(stack, "GET", "/orders", staff).json()["orders"]}
    board = call(stack, "GET", "/orders/board", staff).json()
    assert board["user_id"] is None and {"alice", "bob"} <= {o["user_id"] for o in board["orders"]}
    assert call(stack, "GET", "/me", staff).json() == {"user_id": "carol", "staff": True, "auth": "oidc"}
