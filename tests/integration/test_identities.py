"""Broker identities: each service as a RabbitMQ user of its own, with the rights of its part of the
topology only (ops.identities), declaring only that part (RABBITMQ_TOPOLOGY=own), and believing a
result only from the user entitled to send it (ORDER_PUBLISHER_USER, INVENTORY_PUBLISHER_USER).

The users are real users of the local broker, made for each test with fresh names and deleted after.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
import requests

from messaging import topology
from messaging.amqp import dead_lettering
from messaging.events import utc_now
from ops.identities import Management
from stack.broker import Broker
from stack.processes import ROOT, Stack
from tests.client import drain, get_order, post_order, publish, wait_for

ACCESS_REFUSED, PRECONDITION_FAILED = 403, 406
REPLAY = ("--queue", "order-status-dlq", "replay", "--all")  # only OrderService runs: its DLQ alone


@pytest.fixture
def users(broker: Broker, vhost: str) -> Iterator[dict[str, tuple[str, str]]]:
    """service -> (user, password): each service's own broker user in this test's vhost."""
    made = broker.create_identities(vhost)
    yield made
    broker.delete_users(*(user for user, _ in made.values()))


def identity_env(users: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """What each service's instances get: its user, its part of the topology, the sender check."""
    shared = {"RABBITMQ_TOPOLOGY": "own", "ORDER_PUBLISHER_USER": users["order"][0],
              "INVENTORY_PUBLISHER_USER": users["inventory"][0]}
    return {service: {**shared, "RABBITMQ_USER": user, "RABBITMQ_PASSWORD": password}
            for service, (user, password) in users.items()}


@pytest.fixture
def narrow_stack(make_stack: Callable[..., Stack], users) -> Stack:
    return make_stack(service_env=identity_env(users))


def connect_as(broker: Broker, vhost: str, user: tuple[str, str]) -> pika.BlockingConnection:
    settings = broker.settings(vhost)
    parameters = settings.parameters()
    parameters.credentials = pika.PlainCredentials(*user)
    return pika.BlockingConnection(parameters)


def refusal(broker: Broker, vhost: str, user: tuple[str, str], exchange: str, routing_key: str,
            **properties) -> tuple[int, str] | None:
    """Publish one message as `user`, confirmed; the broker's (code, text) when it closes the channel."""
    connection = connect_as(broker, vhost, user)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        publish(channel, {"forged": True}, exchange, routing_key, **properties)
        return None
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc.reply_code, exc.reply_text
    finally:
        if connection.is_open:
            connection.close()


def reserved_for(order: dict) -> dict:
    """An InventoryReserved for `order`, as InventoryService would send it."""
    return {"event_id": str(uuid.uuid4()), "event_type": "InventoryReserved",
            "order_id": order["order_id"], "timestamp": utc_now(), "user_id": "user123",
            "item": "Burger", "quantity": 2}


def test_every_service_works_and_reconnects_with_only_its_own_rights(narrow_stack: Stack,
                                                                     broker: Broker, vhost: str,
                                                                     users) -> None:
    narrow_stack.start()
    assert broker.queue_names(vhost) == {q.name for q in topology.QUEUES}, \
        "the three parts together are the whole topology"
    for queue in topology.QUEUES:
        assert broker.queue(vhost, queue.name)["arguments"] == queue.arguments()
        for exchange, key in queue.bindings:
            assert key in [b["routing_key"] for b in broker.bindings(vhost, exchange, queue.name)]
    first = post_order(narrow_stack.order_url)["order_id"]
    wait_for(lambda: get_order(narrow_stack.order_url, first)["status"] == "reserved",
             what="the order reserved through three narrow users")
    wait_for(lambda: f"order_id={first}" in narrow_stack["notification"].log(),
             what="the notification")

    for service, (user, _) in users.items():  # an operator closes every connection of theirs
        names = wait_for(lambda user=user: broker.connections_of(user), what=f"{service}'s connections")
        for name in names:
            broker.close_connection(name)
    second = post_order(narrow_stack.order_url)["order_id"]
    wait_for(lambda: get_order(narrow_stack.order_url, second)["status"] == "reserved",
             what="an order after every connection was closed")
    wait_for(lambda: f"order_id={second}" in narrow_stack["notification"].log(),
             what="its notification")
    assert broker.depth(vhost, "order-status-dlq") == broker.depth(vhost, "order-events-dlq") == 0


@pytest.mark.parametrize("service, exchange, routing_key", [
    ("order", topology.INVENTORY_EXCHANGE, topology.INVENTORY_RESERVED_KEY),
    ("notification", topology.INVENTORY_EXCHANGE, topology.INVENTORY_RESERVED_KEY),
    ("inventory", topology.ORDERS_EXCHANGE, topology.ORDER_PLACED_KEY),
])
def test_a_service_may_not_publish_what_another_sends(broker: Broker, vhost: str, users, service,
                                                      exchange, routing_key) -> None:
    with broker.channel(vhost) as channel:
        topology.declare(channel)
    code, text = refusal(broker, vhost, users[service], exchange, routing_key)
    assert code == ACCESS_REFUSED and f"exchange '{exchange}'" in text


def test_a_service_may_put_dead_letters_only_in_its_own_dlq(broker: Broker, vhost: str, users) -> None:
    with broker.channel(vhost) as channel:
        topology.declare(channel)
    assert refusal(broker, vhost, users["order"], topology.DEAD_LETTER_EXCHANGE,
                   "order-status-dlq") is None
    code, text = refusal(broker, vhost, users["order"], topology.DEAD_LETTER_EXCHANGE, "order-events-dlq")
    assert code == ACCESS_REFUSED and "order-events-dlq" in text, "a topic permission on dlx"


def test_the_broker_refuses_a_user_id_that_is_not_the_publishers(broker: Broker, vhost: str,
                                                                 users) -> None:
    with broker.channel(vhost) as channel:
        topology.declare(channel)
    code, _ = refusal(broker, vhost, users["order"], topology.ORDERS_EXCHANGE,
                      topology.ORDER_PLACED_KEY, user_id=users["inventory"][0])
    assert code == PRECONDITION_FAILED


def test_a_forged_result_is_dead_lettered_and_the_order_stays_as_it_was(narrow_stack: Stack,
                                                                        broker: Broker, vhost: str,
                                                                        users) -> None:
    narrow_stack.start("order")  # InventoryService not running: the order stays accepted
    order = post_order(narrow_stack.order_url)
    with broker.channel(vhost) as channel:  # as the operator, who may publish anywhere
        channel.confirm_delivery()
        publish(channel, reserved_for(order), topology.INVENTORY_EXCHANGE,
                topology.INVENTORY_RESERVED_KEY, message_id="anonymous")
        publish(channel, reserved_for(order), topology.INVENTORY_EXCHANGE,
                topology.INVENTORY_RESERVED_KEY, message_id="as-guest", user_id=broker.user)
    wait_for(lambda: broker.depth(vhost, "order-status-dlq") == 2, what="both forgeries dead-lettered")
    assert get_order(narrow_stack.order_url, order["order_id"])["status"] == "accepted"
    with broker.channel(vhost) as channel:
        letters = {p.message_id: p for p, _ in drain(channel, "order-status-dlq")}
    assert {m: p.headers[dead_lettering.REASON] for m, p in letters.items()} == \
        {"anonymous": "unexpected-sender", "as-guest": "unexpected-sender"}
    assert {p.user_id for p in letters.values()} == {users["order"][0]}, \
        "a dead letter is published as the service that dead-lettered it"
    assert letters["as-guest"].headers[dead_lettering.ORIGINAL_USER_ID] == broker.user

    narrow_stack.start("inventory")  # the real result, from the entitled user, is believed
    wait_for(lambda: get_order(narrow_stack.order_url, order["order_id"])["status"] == "reserved",
             what="the order reserved by InventoryService itself")


def test_a_forged_order_placed_is_dead_lettered_and_reserves_nothing(narrow_stack: Stack,
                                                                     broker: Broker, vhost: str) -> None:
    narrow_stack.start("inventory")
    body = {"event_id": str(uuid.uuid4()), "event_type": "OrderPlaced", "order_id": str(uuid.uuid4()),
            "timestamp": utc_now(), "user_id": "user123", "item": "Burger", "quantity": 1}
    with broker.channel(vhost) as channel:  # a probe that sees every result InventoryService sends
        channel.queue_declare("probe", durable=True)
        channel.queue_bind("probe", topology.INVENTORY_EXCHANGE, "#")
        channel.confirm_delivery()
        publish(channel, body)
    wait_for(lambda: broker.depth(vhost, "order-events-dlq") == 1, what="the forgery dead-lettered")
    with broker.channel(vhost) as channel:
        [(properties, raw)] = drain(channel, "order-events-dlq")
    assert properties.headers[dead_lettering.REASON] == "unexpected-sender"
    assert json.loads(raw) == body
    assert broker.depth(vhost, "probe") == 0, "no result was published for it"


@pytest.fixture
def operator(broker: Broker, vhost: str) -> Iterator[tuple[str, str]]:
    """An administrator of this test's vhost other than guest (whose tags are left alone)."""
    name, password = f"operator-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    management = Management(broker.api, broker.user, broker.password)
    management.put_user(name, password, "administrator")
    management.grant(vhost, name, topology.OPERATOR_RIGHTS)
    yield name, password
    broker.delete_users(name)


def run_tool(module: str, vhost: str, user: tuple[str, str], *args: str,
             **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_VHOST": vhost,
                   "RABBITMQ_USER": user[0], "RABBITMQ_PASSWORD": user[1], **env}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_ops_identities_makes_each_user_with_its_rights_and_the_operator_an_impersonator(
        broker: Broker, vhost: str, operator) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {service: f"{service}-tool-{tag}" for service in topology.PARTS}
    env = {f"{s.upper()}_SERVICE_RABBITMQ_{k}": v for s, n in names.items()
           for k, v in (("USER", n), ("PASSWORD", "pw-" + tag))}
    try:
        result = run_tool("ops.identities", vhost, operator, **env)
        assert result.returncode == 0, result.stderr
        http = requests.Session()
        http.auth = (broker.user, broker.password)
        for service, name in names.items():
            user = http.get(f"{broker.api}/users/{name}", timeout=10).json()
            assert user["tags"] in ([], ""), "a service is no administrator, nor sees the UI"
            rights = http.get(f"{broker.api}/permissions/{quote(vhost, safe='')}/{name}", timeout=10).json()
            expected = topology.rights(service)
            assert (rights["configure"], rights["write"], rights["read"]) == \
                (expected.configure, expected.write, expected.read)
            topics = http.get(f"{broker.api}/users/{name}/topic-permissions", timeout=10).json()
            assert sorted((t["exchange"], t["write"]) for t in topics) == list(expected.topics)
        tags = http.get(f"{broker.api}/users/{operator[0]}", timeout=10).json()["tags"]
        assert set(tags if isinstance(tags, list) else tags.split(",")) == {"administrator", "impersonator"}
        assert connect_as(broker, vhost, (names["order"], "pw-" + tag)).close() is None, "it logs in"
    finally:
        broker.delete_users(*names.values())


def test_a_replayed_dead_letter_goes_out_as_its_first_sender(narrow_stack: Stack, broker: Broker,
                                                            vhost: str, users, operator) -> None:
    narrow_stack.start("order")
    order = post_order(narrow_stack.order_url)
    headers = {dead_lettering.REASON: "transient-retries-exhausted",
               dead_lettering.ORIGINAL_EXCHANGE: topology.INVENTORY_EXCHANGE,
               dead_lettering.ORIGINAL_ROUTING_KEY: topology.INVENTORY_RESERVED_KEY,
               dead_lettering.ORIGINAL_USER_ID: users["inventory"][0]}
    with broker.channel(vhost) as channel:  # a result InventoryService sent, dead-lettered since
        channel.confirm_delivery()
        publish(channel, reserved_for(order), topology.DEAD_LETTER_EXCHANGE, "order-status-dlq",
                message_id="late-result", headers=headers)
    refused = run_tool("ops.dlq", vhost, (broker.user, broker.password), *REPLAY)
    assert refused.returncode != 0 and "PRECONDITION_FAILED" in refused.stderr, \
        "without the impersonator tag RabbitMQ refuses another user's user_id"
    assert broker.depth(vhost, "order-status-dlq") == 1, "kept in the DLQ"
    Management(broker.api, broker.user, broker.password).add_tag(operator[0], "impersonator")
    replayed = run_tool("ops.dlq", vhost, operator, *REPLAY)
    assert replayed.returncode == 0 and "1 replayed" in replayed.stdout, replayed.stderr
    wait_for(lambda: get_order(narrow_stack.order_url, order["order_id"])["status"] == "reserved",
             what="the replayed result believed as InventoryService's")
