"""The order page as the browser tests drive it: by keyboard where a person would use one."""
from __future__ import annotations

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

TIMEOUT = 20.0  # seconds; a change should show within one, a restart takes a few


class OrderPage:
    """One loaded order page."""

    def __init__(self, driver, base_url: str) -> None:
        self.driver, self.base_url = driver, base_url

    def open(self) -> OrderPage:
        """Load the page and wait for its first answer from the board."""
        self.driver.get(f"{self.base_url}/")
        self.wait(lambda d: d.find_element(By.ID, "service").text.startswith("Broker"),
                  "the page's first board")
        return self

    def wait(self, condition, what: str, timeout: float = TIMEOUT):
        """Wait (polling, with a deadline) until `condition(driver)` is truthy; return it."""
        # The page replaces its rows when the board changes: an element read mid-change is stale.
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            condition, message=f"timed out after {timeout}s waiting for {what}")

    def element(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def active_id(self) -> str:
        return self.driver.switch_to.active_element.get_attribute("id")

    def keys(self, *keys: str) -> None:
        """Type into whatever has the focus."""
        ActionChains(self.driver).send_keys(*keys).perform()

    def select_all(self) -> None:
        """Ctrl+A in the focused field, so what is typed next replaces its text."""
        ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()

    def place_by_keyboard(self, user: str, item: str, quantity: str) -> None:
        """Tab from the top of the page through the form, type each field, submit with Enter."""
        self.driver.find_element(By.TAG_NAME, "body").click()
        self.keys(Keys.TAB)
        for field, value in (("user_id", user), ("item", item), ("quantity", quantity)):
            assert self.active_id() == field, f"Tab should reach {field}, reached {self.active_id()}"
            self.select_all()
            self.keys(value)
            if field != "quantity":
                self.keys(Keys.ESCAPE, Keys.TAB)  # Escape closes the menu's suggestions
        self.keys(Keys.ENTER)

    def place(self, user: str, item: str, quantity: str) -> str:
        """Place an order by keyboard and return the order id the page announces."""
        before = self.element("placed").get_attribute("data-order-id")
        self.place_by_keyboard(user, item, quantity)
        return self.wait(lambda d: (d.find_element(By.ID, "placed").get_attribute("data-order-id")
                                    not in (None, before)) and
                         d.find_element(By.ID, "placed").get_attribute("data-order-id"),
                         "the page to announce the accepted order")

    def show_user(self, user: str) -> None:
        """Filter the table to one user's orders and wait until it shows them."""
        box = self.element("filter")
        box.clear()
        box.send_keys(user)
        self.wait(lambda d: self.element("order-rows").get_attribute("data-user") == user,
                  f"the table to show the orders of {user}")

    def order(self, order_id: str) -> dict | None:
        """The order's row as the page shows it (read at once), or None if it shows none."""
        return self.driver.execute_script("""
            const row = document.querySelector(`tr[data-order-id="${arguments[0]}"]`);
            if (!row) return null;
            const part = (selector) => (row.querySelector(selector) || {}).textContent || null;
            const badge = row.querySelector(".status");
            return {status: row.dataset.status, badge: part(".status"), reason: part(".reason"),
                    colour: badge && getComputedStyle(badge).backgroundColor,
                    x: row.getBoundingClientRect().left, right: row.getBoundingClientRect().right};
        """, order_id)

    def rows(self) -> int:
        return len(self.driver.find_elements(By.CSS_SELECTOR, "#order-rows tr"))

    def status_of(self, order_id: str) -> str | None:
        """The status the page shows for an order (data-status), or None if it shows no row."""
        shown = self.order(order_id)
        return shown and shown["status"]

    def wait_status(self, order_id: str, status: str, timeout: float = TIMEOUT) -> dict:
        """Wait until the order's row says `status`; return the row as `order` reads it."""
        return self.wait(lambda d: (shown := self.order(order_id)) and shown["status"] == status
                         and shown, f"order {order_id} to show {status}", timeout)

    def count(self, status: str) -> str:
        return self.element(f"count-{status}").text

    def console_errors(self) -> list[str]:
        """CSP violations and uncaught errors the browser logged since the last call."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if "Content Security Policy" in entry["message"] or "Uncaught" in entry["message"]]

    def assert_no_console_errors(self) -> None:
        errors = self.console_errors()
        assert not errors, f"the browser logged: {errors}"
