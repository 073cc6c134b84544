"""Take docs/page.png: the order page in headless Chromium, over a real stack with a few orders.

`python -m tools.page_screenshot [path]` starts the three services in a vhost of its own (RabbitMQ
on localhost, as the tests use it), places orders that end `reserved` and `failed`, stops
InventoryService so the last ones stay `accepted`, and saves what the browser shows.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from selenium.webdriver.support.ui import WebDriverWait

from messaging import topology
from stack import browser
from stack.broker import Broker
from stack.processes import Stack
from tests.client import post_order, statuses, wait_for

ORDERS = [("ana", "Burger", 2), ("ben", "Coffee", 1), ("ana", "Pizza", 1),
          ("chen", "Dragon fruit pie", 1), ("ben", "Sushi", 3)]
WAITING = [("dara", "Noodles", 2), ("chen", "Salad", 1)]


def place_orders(stack: Stack, broker: Broker) -> None:
    """Some orders to a final status, then some that wait while InventoryService is down."""
    ids = [post_order(stack.order_url, *order)["order_id"] for order in ORDERS]
    wait_for(lambda: all(statuses(stack.order_url)[i] != "accepted" for i in ids), timeout=30,
             what="the first orders to be final")
    stack["inventory"].terminate()
    for order in WAITING:
        post_order(stack.order_url, *order)
    wait_for(lambda: broker.depth(stack.vhost, topology.ORDER_EVENTS.name) == len(WAITING),
             timeout=30, what="the last orders to wait in order-events")


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "docs/page.png")
    broker = Broker()
    vhost = broker.create_vhost("screenshot")
    stack = Stack(vhost, Path(tempfile.mkdtemp(prefix="screenshot-")),
                  INVENTORY_SUCCESS_RATE="1.0")
    driver = None
    try:
        stack.start()
        place_orders(stack, broker)
        driver = browser.chromium(1100, 1000)
        driver.get(f"{stack.order_url}/")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(
            "return document.querySelectorAll('#order-rows tr').length") == len(ORDERS) + len(WAITING))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        browser.viewport(driver, 1100, height)
        driver.save_screenshot(str(target))
    finally:
        if driver is not None:
            driver.quit()
        stack.close()
        broker.delete_vhost(vhost)
    print(f"saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
