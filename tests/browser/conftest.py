"""The browser tests' fixtures: one real stack and one headless Chromium for the whole module."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack import browser
from stack.broker import Broker
from stack.processes import Stack
from tests.browser.order_page import OrderPage


@pytest.fixture(scope="module")
def page_stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """All three services in a vhost of their own, shared by a module's tests (each its own user)."""
    vhost = broker.create_vhost("page")
    stack = Stack(vhost, tmp_path_factory.mktemp("page-stack"))
    try:
        yield stack.start()
    finally:
        stack.close()
        broker.delete_vhost(vhost)


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    """A headless Chromium (Debian's, through its chromedriver)."""
    reason = browser.missing()
    if reason:
        pytest.fail(f"the browser tests need Chromium: {reason}")
    driver = browser.chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(driver, page_stack: Stack) -> Iterator[OrderPage]:
    """The order page, freshly loaded; fails the test if the browser logged a CSP violation."""
    browser.full_viewport(driver)
    order_page = OrderPage(driver, page_stack.order_url).open()
    yield order_page
    order_page.assert_no_console_errors()
