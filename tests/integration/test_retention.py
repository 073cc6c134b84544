"""Services prune their deduplication records past DEDUP_RETENTION and keep the business records."""
from __future__ import annotations

import subprocess
import sys

import requests

from stack.processes import ROOT
from tests.client import all_final, get_order, post_orders, wait_for


def health(service) -> dict:
    answer = service.health()
    return answer[1] if answer else {}


def test_a_service_with_a_tiny_window_prunes_its_records_and_keeps_the_orders(make_stack):
    stack = make_stack(DEDUP_RETENTION="1s", DEDUP_PRUNE_INTERVAL="0.2").start()
    order_ids = post_orders(stack.order_url, 5, clients=5, quantity=1)
    wait_for(lambda: all_final(stack.order_url, order_ids), what="every order final")
    notification, inventory = stack["notification"], stack["inventory"]
    wait_for(lambda: health(notification).get("pruned", {}).get("notifications", 0) == 5
             and health(notification)["notifications_sent"] == 0,
             what="the notifications pruned")
    wait_for(lambda: health(inventory).get("pruned", {}).get("inbox", 0) == 5,
             what="InventoryService's inbox pruned")
    # Orders and reservations are business records: untouched by the pruning.
    assert {get_order(stack.order_url, o)["status"] for o in order_ids} == {"reserved"}
    stock = requests.get(f"{inventory.url}/stock", timeout=5)
    assert sum(item["reserved"] for item in stock.json()["stock"]) == 5
    # The audit checks notifications within the window only, so it passes with none left.
    audit = subprocess.run([sys.executable, "-m", "ops.audit", "--retention", "1s",
                            *stack.audit_args()], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "5 decided before the deduplication window" in audit.stdout
