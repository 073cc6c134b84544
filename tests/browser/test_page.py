"""The order page in Debian's headless Chromium against real services (which enforce nothing the
browser does not: the page's Content-Security-Policy is Chromium's to enforce)."""
from __future__ import annotations

import uuid

import requests
from selenium.webdriver.common.keys import Keys

from messaging import topology
from stack import browser
from tests.client import get_order, post_order, wait_for

RESERVED_GREEN = "rgb(220, 243, 228)"  # --reserved-bg in page.css


def new_user() -> str:
    return f"page-{uuid.uuid4().hex[:8]}"


def test_an_order_placed_by_keyboard_turns_reserved_on_the_page(page):
    user = new_user()
    page.show_user(user)
    order_id = page.place(user, "Burger", "2")
    row = page.wait_status(order_id, "reserved")
    assert row["badge"] == "reserved"
    assert row["colour"] == RESERVED_GREEN, "page.css applies"
    page.wait(lambda d: [page.count(s) for s in ("accepted", "reserved", "failed")] == ["0", "1", "0"],
              "the counts to show one reserved order")  # recounted within a second
    assert page.element("service").text.startswith("Broker connected")


def test_an_unknown_item_turns_failed_with_its_reason(page, page_stack):
    user = new_user()
    page.show_user(user)
    order_id = page.place(user, "Unicorn steak", "1")
    row = page.wait_status(order_id, "failed")
    reason = get_order(page_stack.order_url, order_id)["reason"]
    assert reason
    assert row["reason"] == reason
    assert row["badge"] == "failed"
    page.wait(lambda d: page.count("failed") == "1", "the counts to show one failed order")


def test_an_order_stays_accepted_while_inventory_is_down_and_completes_after(page, page_stack,
                                                                             broker):
    user = new_user()
    page.show_user(user)
    page_stack["inventory"].terminate()
    try:
        order_id = page.place(user, "Pizza", "1")
        wait_for(lambda: broker.depth(page_stack.vhost, topology.ORDER_EVENTS.name) == 1,
                 timeout=20, what="the OrderPlaced event to wait in order-events")
        page.wait(lambda d: "0 events waiting" in page.element("service").text,
                  "the page to show the outbox emptied")
        assert page.status_of(order_id) == "accepted"
        page.wait(lambda d: page.count("accepted") == "1", "the counts to show it accepted")
        page_stack["inventory"].start().wait_healthy()
        page.wait_status(order_id, "reserved", timeout=30)
    finally:
        if not page_stack["inventory"].running:
            page_stack["inventory"].start().wait_healthy()


def test_a_bad_quantity_shows_the_apis_error_next_to_the_field(page, page_stack):
    user = new_user()
    for typed, sent in (("0", 0), ("two", "two")):
        page.place_by_keyboard(user, "Burger", typed)
        api = requests.post(f"{page_stack.order_url}/order", timeout=10,
                            json={"user_id": user, "item": "Burger", "quantity": sent})
        expected = "quantity " + api.json()["errors"]["quantity"]
        page.wait(lambda d, expected=expected: page.element("quantity-error").text == expected,
                  f"the quantity error {expected!r}")
        assert page.element("quantity").get_attribute("aria-invalid") == "true"
        assert page.active_id() == "quantity", "the focus goes to the field to correct"
        assert page.element("user_id-error").text == ""
    page.select_all()  # the field kept its focus: correct it and submit again
    page.keys("3", Keys.ENTER)
    page.wait(lambda d: page.element("quantity-error").text == "", "the error to clear")


def test_at_360_pixels_the_form_and_the_orders_fit_without_scrolling_sideways(page, page_stack):
    user, other = new_user(), new_user()
    failed = post_order(page_stack.order_url, user, "A very long name of a dish nobody serves", 1)
    post_order(page_stack.order_url, other, "Salad", 1)
    browser.viewport(page.driver, 360, 740)
    page.open()
    page.show_user(user)
    row = page.wait_status(failed["order_id"], "failed")
    assert page.rows() == 1, "only the orders of `user`"
    width = page.driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width}px wide at a 360px viewport"
    for element in [page.element(i) for i in ("user_id", "item", "quantity", "place", "filter")]:
        assert element.is_displayed()
        assert element.rect["x"] >= 0 and element.rect["x"] + element.rect["width"] <= 360
    assert row["x"] >= 0 and row["right"] <= 360


LOSE_THE_FIRST_ANSWER = """
const realFetch = window.fetch;
window.sentKeys = [];
window.fetch = async (url, init) => {
  const answer = await realFetch(url, init);
  if (url !== "/order") return answer;
  window.sentKeys.push(init.headers["Idempotency-Key"]);
  if (window.sentKeys.length === 1) throw new TypeError("the connection dropped before the answer");
  return answer;
};
"""


def test_a_lost_answer_is_retried_with_the_same_key_and_places_one_order(page, page_stack):
    user = new_user()
    page.show_user(user)
    page.driver.execute_script(LOSE_THE_FIRST_ANSWER)
    order_id = page.place(user, "Burger", "1")
    first, retry = page.driver.execute_script("return window.sentKeys")
    assert first == retry and uuid.UUID(first).version == 4
    orders = requests.get(f"{page_stack.order_url}/orders", params={"user_id": user}, timeout=10).json()
    assert [o["order_id"] for o in orders["orders"]] == [order_id]
    second_id = page.place(user, "Burger", "1")  # the same order again, on purpose: a new one
    assert second_id != order_id
    assert page.driver.execute_script("return window.sentKeys")[2] != first
    page.assert_no_console_errors()
