"""The order page behind a sign-in gateway, in headless Chromium: OrderService runs with AUTH=oidc
and the browser sends each request with `Authorization: Bearer`, as oauth2-proxy adds it
(`--pass-access-token`, `--set-authorization-header`)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from stack.broker import Broker
from stack.processes import Stack
from tests.browser.order_page import OrderPage
from tests.identity import IdentityProvider


@pytest.fixture(scope="module")
def page_stack(broker: Broker, idp: IdentityProvider,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """OrderService (AUTH=oidc) and InventoryService in a vhost of their own, for the module."""
    vhost = broker.create_vhost("signed-in-page")
    stack = Stack(vhost, tmp_path_factory.mktemp("signed-in-page"), AUTH="oidc",
                  OIDC_ISSUER=idp.issuer, OIDC_AUDIENCE=idp.audience)
    try:
        yield stack.start("order", "inventory")
    finally:
        stack.close()
        broker.delete_vhost(vhost)


@pytest.fixture(scope="module")
def bobs_order(page_stack: Stack, idp: IdentityProvider) -> str:
    """An order of another student, bob."""
    response = requests.post(f"{page_stack.order_url}/order", json={"item": "Pizza", "quantity": 1},
                             headers=idp.headers(sub="bob"), timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["order_id"]


def signed_in(driver, idp: IdentityProvider, user: str, *roles: str) -> None:
    """What the gateway does: every request of the browser carries the user's access token."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Bearer {idp.token(user, roles)}"}})


@pytest.fixture
def open_page(driver, page_stack: Stack, idp: IdentityProvider):
    pages: list[OrderPage] = []

    def open_as(user: str, *roles: str) -> OrderPage:
        signed_in(driver, idp, user, *roles)
        pages.append(OrderPage(driver, page_stack.order_url).open())
        return pages[-1]

    yield open_as
    for page in pages:
        page.assert_no_console_errors()


def test_the_page_shows_the_signed_in_student_and_fixes_the_user_to_them(open_page, bobs_order):
    page = open_page("alice")
    page.wait(lambda d: page.element("signed-in").text.startswith("Signed in as alice"),
              "the page to name the signed-in user")
    assert page.element("user_id").get_attribute("value") == "alice"
    assert page.element("user_id").get_attribute("readonly") is not None
    assert page.element("filter").get_attribute("value") == "alice"
    order_id = page.place("mallory", "Burger", "1")  # the fixed field takes no typing
    row = page.wait_status(order_id, "reserved")
    assert row["badge"] == "reserved"
    assert page.element("order-rows").get_attribute("data-user") == "alice"
    users = page.driver.execute_script(
        "return [...document.querySelectorAll('#order-rows td[data-label=User]')].map(c => c.textContent)")
    assert set(users) == {"alice"} and page.order(bobs_order) is None, "bob's order is not theirs to see"


def test_staff_see_everyones_orders(open_page, bobs_order):
    page = open_page("carol", "staff")
    page.wait(lambda d: "staff" in page.element("signed-in").text, "the page to name a staff member")
    assert page.element("user_id").get_attribute("value") == "carol"
    assert page.element("filter").get_attribute("readonly") is None
    page.wait(lambda d: page.order(bobs_order) is not None, "bob's order on the board")


def test_without_a_token_the_page_says_it_is_not_signed_in(driver, page_stack):
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
    driver.get(f"{page_stack.order_url}/")
    page = OrderPage(driver, page_stack.order_url)
    page.wait(lambda d: page.element("signed-in").text.startswith("Not signed in"),
              "the page to say nobody is signed in")
