"""Transient failures are retried boundedly then dead-lettered; the DLQ tool lists, shows and replays."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from messaging.amqp import dead_lettering
from stack.processes import ROOT
from tests.client import drain, get_order, order_placed_body, post_order, publish, wait_for

FAST_RETRIES = {"TRANSIENT_RETRY_LIMIT": "3", "TRANSIENT_RETRY_DELAY": "0.05",
                "SQLITE_BUSY_TIMEOUT_MS": "100"}


def dlq(vhost: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RABBITMQ_VHOST": vhost, "RABBITMQ_HOST": "127.0.0.1"}
    return subprocess.run([sys.executable, "-m", "ops.dlq", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def retries(stack) -> float:
    """Transient failures InventoryService retried (the last try of a message is not one)."""
    return stack["inventory"].metrics().value("message_handling_retries_total", queue="order-events")


def lock(path) -> sqlite3.Connection:
    """Hold the write lock of a SQLite file, as a stuck writer would."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_locked_database_is_retried_then_dead_lettered_and_replay_completes_the_order(make_stack, broker):
    stack = make_stack("sqlite", **FAST_RETRIES).start()
    holder = lock(stack["inventory"].data_dir / "inventory.db")
    try:
        order_id = post_order(stack.order_url, item="Noodles")["order_id"]
        wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == 1, timeout=30,
                 what="the order's event to be dead-lettered after bounded retries")
        assert retries(stack) == 3 - 1  # the last try gives up
        assert stack["inventory"].metrics().labelled("messages_dead_lettered_total", "reason") == {
            "transient-retries-exhausted": 1}
        assert get_order(stack.order_url, order_id)["status"] == "accepted"
    finally:
        holder.rollback() if holder.in_transaction else None
        holder.close()

    listing = dlq(stack.vhost, "--json", "list")
    assert listing.returncode == 0, listing.stderr
    [row] = json.loads(listing.stdout)
    assert row["reason"] == "transient-retries-exhausted"
    assert row["attempts"] == 3
    assert row["service"] == "inventory-service"
    assert (row["original_exchange"], row["original_routing_key"]) == ("orders", "order.placed")
    assert "database is locked" in row["error"]

    shown = dlq(stack.vhost, "show", row["id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(json.loads(shown.stdout)["body"])["order_id"] == order_id
    assert broker.depth(stack.vhost, "order-events-dlq") == 1, "list and show leave it in place"

    replayed = dlq(stack.vhost, "replay", row["id"])
    assert replayed.returncode == 0, replayed.stderr
    assert "1 replayed" in replayed.stdout
    wait_for(lambda: get_order(stack.order_url, order_id)["status"] == "reserved",
             what="the replayed order to complete")
    assert broker.depth(stack.vhost, "order-events-dlq") == 0


def test_replayed_poison_returns_to_the_dlq_once_and_never_cycles(make_stack, broker):
    stack = make_stack().start("inventory")
    with broker.channel(stack.vhost) as channel:
        publish(channel, b"{broken", message_id="poison-1")
        publish(channel, json.dumps(order_placed_body(quantity=0)).encode(), message_id="poison-2")
    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == 2, what="two dead letters")

    only_json = dlq(stack.vhost, "replay", "--reason", "malformed-json")
    assert only_json.returncode == 0 and "1 replayed" in only_json.stdout
    everything = dlq(stack.vhost, "replay", "--all")
    assert everything.returncode == 0 and "2 replayed" in everything.stdout
    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == 2
             and stack["inventory"].metrics().value("messages_dead_lettered_total") == 5,
             what="both poison messages back in the DLQ, once per replay")
    with broker.channel(stack.vhost) as channel:
        letters = {p.message_id: p.headers for p, _ in drain(channel, "order-events-dlq")}
    assert letters["poison-1"]["x-dlq-replayed"] == 2
    assert letters["poison-2"]["x-dlq-replayed"] == 1
    assert letters["poison-1"][dead_lettering.ORIGINAL_EXCHANGE] == "orders"

    missing = dlq(stack.vhost, "show", "no-such-id")
    assert missing.returncode == 1 and "no dead letter no-such-id" in missing.stderr
    nothing = dlq(stack.vhost, "replay")
    assert nothing.returncode == 1


def test_message_redelivered_past_the_limit_is_dead_lettered(make_stack, broker):
    """A message whose processing keeps dying with the process must not be redelivered forever."""
    stack = make_stack("sqlite", REDELIVERY_LIMIT="1", TRANSIENT_RETRY_LIMIT="100",
                       TRANSIENT_RETRY_DELAY="0.2", SQLITE_BUSY_TIMEOUT_MS="100").start("inventory")
    holder = lock(stack["inventory"].data_dir / "inventory.db")
    try:
        with broker.channel(stack.vhost) as channel:
            publish(channel, order_placed_body(), message_id="doomed")
        wait_for(lambda: retries(stack) >= 1, what="the stuck attempt")
        stack["inventory"].kill()  # dies holding the unacked message
    finally:
        holder.rollback()
        holder.close()
    stack["inventory"].start().wait_healthy()
    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == 1, what="the dead letter")
    with broker.channel(stack.vhost) as channel:
        [(props, _)] = drain(channel, "order-events-dlq")
    assert props.message_id == "doomed"
    assert props.headers[dead_lettering.REASON] == "redelivery-limit"
    assert props.headers[dead_lettering.ATTEMPTS] == 2
