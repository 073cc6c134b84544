"""Quorum queues, several nodes in RABBITMQ_HOST, refusing queues of another type, and migrating
the queues from one type to the other without losing a message."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter

import pika
import pika.exceptions
import pytest

from messaging import topology
from stack.processes import ROOT, ServiceProcess, free_port
from tests.client import all_final, drain, post_orders, publish, wait_for

MODULES = ["order_service", "inventory_service", "notification_service"]
QUEUE_NAMES = {q.name for q in topology.QUEUES}


def declare_topology(broker, vhost: str, queue_type: str) -> None:
    with broker.channel(vhost) as channel:
        topology.declare(channel, queue_type)


def run_module(module: str, vhost: str, tmp_path, timeout: float = 60, **env: str):
    environment = {**os.environ, "DATA_DIR": str(tmp_path), "RABBITMQ_HOST": "127.0.0.1",
                   "RABBITMQ_VHOST": vhost, "PORT": str(free_port()), **env}
    return subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("have, want", [("classic", "quorum"), ("quorum", "classic")])
def test_queues_of_another_type_stop_the_service_with_one_line(broker, vhost, tmp_path, module,
                                                                have, want):
    declare_topology(broker, vhost, have)
    result = run_module(module, vhost, tmp_path, RABBITMQ_QUEUE_TYPE=want)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if "RABBITMQ_QUEUE_TYPE" in line]
    assert len(lines) == 1, result.stderr
    assert f"is a {have} queue on the broker but RABBITMQ_QUEUE_TYPE={want} asks for a {want} " \
           f"queue" in lines[0]
    assert "queue '" in lines[0] and f"ops.migrate_queues --to {want}" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    if module == "order_service":  # refused before gunicorn forks a worker
        assert "Booting worker" not in result.stderr
    for queue in topology.QUEUES:  # the broker kept its queues as they were
        assert broker.queue(vhost, queue.name).get("type") == have


def test_order_service_master_exits_when_a_worker_meets_the_refusal_later(broker, tmp_path):
    """The vhost lets nobody in at start-up (nothing to check before the fork); once it does, its
    classic queues refuse the worker's connections and the whole service stops with 3.

    The classic queues are declared before the service starts: declared after, they would race
    the worker's own reconnects, which declare quorum queues the moment the vhost lets them in.
    """
    name = f"late-{uuid.uuid4().hex[:10]}"
    broker.create_vhost(name=name)
    declare_topology(broker, name, "classic")
    broker.limit_connections(name, 0)
    service = ServiceProcess("order", {"RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_VHOST": name,
                                       "RABBITMQ_QUEUE_TYPE": "quorum"}, tmp_path)
    try:
        service.start().wait_healthy()  # accepts orders while the broker cannot be used
        assert "RabbitMQ unreachable at start-up" in service.log(), "the check before the fork saw nothing"
        broker.limit_connections(name, None)
        wait_for(lambda: not service.running, timeout=30, what="OrderService to stop")
        assert service.process.returncode == 3, service.tail()
        assert "is a classic queue on the broker but RABBITMQ_QUEUE_TYPE=quorum" in service.log(), \
            service.tail()
    finally:
        service.kill()
        broker.delete_vhost(name)


def test_quorum_queues_and_a_dead_node_in_the_host_list(make_stack, broker):
    """Orders flow through quorum queues; the first node listed answers nothing, so every
    connection goes on to the second."""
    stack = make_stack(RABBITMQ_HOST="127.0.0.1:1,127.0.0.1", RABBITMQ_QUEUE_TYPE="quorum").start()
    order_ids = post_orders(stack.order_url, 20)
    wait_for(lambda: all_final(stack.order_url, order_ids), what="every order to be final")
    for queue in topology.QUEUES:
        info = broker.queue(stack.vhost, queue.name)
        assert info["type"] == "quorum", queue.name
        assert info["arguments"] == queue.arguments("quorum"), queue.name
    with broker.channel(stack.vhost) as channel:
        publish(channel, b"not json")
    wait_for(lambda: broker.depth(stack.vhost, "order-events-dlq") == 1,
             what="the poison message in the quorum DLQ")


def test_quorum_work_queue_dead_letters_past_its_delivery_limit(broker, vhost):
    declare_topology(broker, vhost, "quorum")
    with broker.channel(vhost) as channel:
        publish(channel, {"any": "thing"})
    assert take_past_the_delivery_limit(broker, vhost, "order-events") == \
        topology.QUORUM_DELIVERY_LIMIT + 1
    # dead-lettered at least once: the broker's own worker moves it, just after the last nack
    wait_for(lambda: broker.depth(vhost, "order-events-dlq") == 1, what="the message in the DLQ")
    assert broker.depth(vhost, "order-events") == 0


def take_past_the_delivery_limit(broker, vhost: str, queue: str) -> int:
    """Get and nack-with-requeue every delivery of `queue` until the broker takes the message
    away; return how many deliveries there were."""
    deliveries = 0
    with broker.channel(vhost) as channel:
        while (method := channel.basic_get(queue, auto_ack=False)[0]) is not None:
            deliveries += 1
            channel.basic_nack(method.delivery_tag, requeue=True)
            assert deliveries <= topology.QUORUM_DELIVERY_LIMIT + 1
    return deliveries


def test_a_dead_letter_the_dlq_refuses_stays_in_the_quorum_queue_until_the_dlq_takes_it(
        broker, vhost):
    """Past its delivery limit a quorum queue dead-letters the message itself. With at-least-once
    dead-lettering it keeps the message while `dlx` cannot route it (the DLQ unbound), and
    delivers it once the DLQ is bound again; at-most-once would drop it.

    (A DLQ that nacks is retried too, but only after the broker's
    dead_letter_worker_publisher_confirm_timeout, 180 s by default: too long for this suite.)
    """
    declare_topology(broker, vhost, "quorum")
    dlq = topology.ORDER_EVENTS_DLQ.name
    broker.unbind(vhost, topology.DEAD_LETTER_EXCHANGE, dlq, dlq)
    with broker.channel(vhost) as channel:
        channel.confirm_delivery()
        publish(channel, b"poison", message_id="poison-1")
    assert take_past_the_delivery_limit(broker, vhost, "order-events") == \
        topology.QUORUM_DELIVERY_LIMIT + 1
    assert broker.depth(vhost, dlq) == 0
    broker.bind(vhost, topology.DEAD_LETTER_EXCHANGE, dlq, dlq)
    # The broker retries a held dead letter every dead_letter_worker_publisher_confirm_timeout
    # (180 s by default), and one it could not route at once when a policy of its queue changes:
    # an inert policy says "try again now".
    broker.set_policy(vhost, "nudge", "^order-events$", {"max-length-bytes": 1 << 40})
    try:
        wait_for(lambda: broker.depth(vhost, dlq) == 1, timeout=30,
                 what="the held dead letter in the DLQ")
    finally:
        broker.clear_policy(vhost, "nudge")
    with broker.channel(vhost) as channel:
        (properties, body), = drain(channel, dlq)
    assert body == b"poison" and properties.message_id == "poison-1"
    assert properties.headers["x-death"][0]["reason"] == "delivery_limit"
    assert broker.depth(vhost, "order-events") == 0


# --- migration ---

def fill(broker, vhost: str, per_queue: int) -> dict[str, Counter]:
    """Publish `per_queue` distinct messages into every queue; return queue -> message ids."""
    sent: dict[str, Counter] = {}
    with broker.channel(vhost) as channel:
        channel.confirm_delivery()
        for name in QUEUE_NAMES:  # straight into the queue: bindings overlap between queues
            ids = [f"{name}-{i}-{uuid.uuid4().hex[:6]}" for i in range(per_queue)]
            for message_id in ids:
                channel.basic_publish("", name, f'{{"id": "{message_id}"}}'.encode(),
                                      pika.BasicProperties(message_id=message_id, delivery_mode=2,
                                                           headers={"x-note": message_id}),
                                      mandatory=True)
            sent[name] = Counter(ids)
    return sent


def contents(broker, vhost: str, queue: str, take: bool) -> Counter:
    """The message ids in `queue`, each checked against its body and header; taken or put back."""
    with broker.channel(vhost) as channel:
        if take:
            messages = drain(channel, queue)
        else:  # unacked and then the channel closes: every message goes back
            messages = []
            while (got := channel.basic_get(queue, auto_ack=False))[0] is not None:
                messages.append(got[1:])
    for properties, body in messages:
        assert body == f'{{"id": "{properties.message_id}"}}'.encode()
        assert properties.headers["x-note"] == properties.message_id
    return Counter(properties.message_id for properties, _ in messages)


def migrate(vhost: str, to: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_VHOST": vhost}
    return subprocess.run([sys.executable, "-m", "ops.migrate_queues", "--to", to], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def assert_queues_are(broker, vhost: str, queue_type: str) -> None:
    assert broker.queue_names(vhost) == QUEUE_NAMES, "no temporary queue is left behind"
    for queue in topology.QUEUES:
        info = broker.queue(vhost, queue.name)
        assert info["type"] == queue_type, queue.name
        assert info["arguments"] == queue.arguments(queue_type), queue.name
        for exchange, key in queue.bindings:
            assert key in {b["routing_key"] for b in broker.bindings(vhost, exchange, queue.name)}


def test_migration_keeps_every_message_exactly_once(broker, vhost):
    declare_topology(broker, vhost, "classic")
    sent = fill(broker, vhost, per_queue=40)

    result = migrate(vhost, "quorum")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "order-events: classic -> quorum, 40 message(s) moved" in result.stdout
    assert_queues_are(broker, vhost, "quorum")
    for name, ids in sent.items():
        assert contents(broker, vhost, name, take=False) == ids, name

    again = migrate(vhost, "quorum")  # nothing to do the second time
    assert again.returncode == 0 and "order-events: quorum -> quorum already" in again.stdout

    back = migrate(vhost, "classic")
    assert back.returncode == 0, back.stdout + back.stderr
    assert_queues_are(broker, vhost, "classic")
    for name, ids in sent.items():
        assert contents(broker, vhost, name, take=True) == ids, name


def test_migration_finishes_a_run_that_was_cut_short(broker, vhost):
    """Cut short after the old queue was replaced: the messages wait in the temporary queue."""
    declare_topology(broker, vhost, "quorum")
    sent = fill(broker, vhost, per_queue=5)
    with broker.channel(vhost) as channel:
        channel.queue_declare("order-status.migrating", durable=True,
                              arguments={"x-queue-type": "quorum"})
        channel.confirm_delivery()
        for _ in range(5):
            method, properties, body = channel.basic_get("order-status", auto_ack=False)
            channel.basic_publish("", "order-status.migrating", body, properties, mandatory=True)
            channel.basic_ack(method.delivery_tag)
    result = migrate(vhost, "quorum")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_queues_are(broker, vhost, "quorum")
    for name, ids in sent.items():
        assert contents(broker, vhost, name, take=True) == ids, name


def test_migration_refuses_while_a_service_consumes(make_stack, broker):
    stack = make_stack().start("notification")
    result = migrate(stack.vhost, "quorum")
    assert result.returncode == 1
    assert "queue 'inventory-events' has 1 consumer(s): stop every service" in result.stderr
    for queue in topology.QUEUES:  # not one of them touched
        assert broker.queue(stack.vhost, queue.name)["type"] == "classic"
    assert broker.queue_names(stack.vhost) == QUEUE_NAMES


def declare_earlier_quorum_topology(broker, vhost: str) -> None:
    """The quorum topology as declared before at-least-once dead-lettering."""
    with broker.channel(vhost) as channel:
        for exchange in topology.EXCHANGES:
            channel.exchange_declare(exchange, "topic", durable=True)
        for queue in topology.QUEUES:
            arguments = {key: value for key, value in queue.arguments("quorum").items()
                         if key not in topology.QUORUM_DEAD_LETTERING}
            channel.queue_declare(queue.name, durable=True, arguments=arguments)
            for exchange, key in queue.bindings:
                channel.queue_bind(queue.name, exchange, key)


def test_quorum_queues_of_an_earlier_version_stop_the_service_and_migrate(broker, vhost, tmp_path):
    """RabbitMQ cannot add x-dead-letter-strategy to an existing queue: a service meeting an
    earlier quorum queue says so in one line and exits 3; the migration re-creates the queues
    with the new arguments, keeping every message."""
    declare_earlier_quorum_topology(broker, vhost)
    sent = fill(broker, vhost, per_queue=10)
    result = run_module("inventory_service", vhost, tmp_path, RABBITMQ_QUEUE_TYPE="quorum")
    assert result.returncode == 3, result.stderr
    assert "quorum queue 'order-events' was declared without at-least-once dead-lettering" \
           in result.stderr
    assert "python -m ops.migrate_queues --to quorum" in result.stderr

    migrated = migrate(vhost, "quorum")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert ("order-events: quorum (without at-least-once dead-lettering) -> quorum, 10 message(s) "
            "moved") in migrated.stdout
    assert_queues_are(broker, vhost, "quorum")
    for name, ids in sent.items():
        assert contents(broker, vhost, name, take=True) == ids, name
