"""Chaos with narrow rights: the services as broker users of their own (ops.identities' rights,
RABBITMQ_TOPOLOGY=own, the sender check on) survive the broker stopping and a kill -9, and the
audit finds nothing lost or doubled."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from stack.processes import Stack
from tests.chaos.harness import OrderStream, broker_stopped, settle_and_audit
from tests.chaos.test_chaos import processed_some
from tests.client import wait_for
from tests.integration.test_identities import identity_env

pytestmark = [pytest.mark.chaos, pytest.mark.private_broker]  # stops the broker


@pytest.fixture
def narrow_stack(make_stack: Callable[..., Stack], broker, vhost: str) -> Iterator[Stack]:
    users = broker.create_identities(vhost)
    yield make_stack(service_env=identity_env(users)).start()
    broker.delete_users(*(user for user, _ in users.values()))


def test_narrow_users_survive_the_broker_stopping_and_starting(narrow_stack, broker, figures):
    stream = OrderStream(narrow_stack.order_url)
    stream.start()
    wait_for(lambda: processed_some(narrow_stack), what="traffic to flow")
    with broker_stopped(broker):
        wait_for(lambda: narrow_stack["inventory"].health()[0] == 503, what="inventory to report 503")
        time.sleep(1.0)  # keep the broker down while the stream goes on (the fault's duration)
    recovered_from = time.monotonic()
    for name in ("order", "inventory", "notification"):
        narrow_stack[name].wait_healthy(timeout=60)
    accepted = stream.stop()
    assert stream.refused == 0
    settle_and_audit(narrow_stack, broker, accepted, figures, since=recovered_from)


def test_narrow_users_survive_a_kill_9_of_inventory_mid_stream(narrow_stack, broker, figures):
    stream = OrderStream(narrow_stack.order_url, rate=60)
    stream.start()
    wait_for(lambda: processed_some(narrow_stack, 40), what="traffic to flow")
    narrow_stack["inventory"].kill()
    time.sleep(0.5)  # orders keep arriving while InventoryService is dead
    narrow_stack["inventory"].start().wait_healthy()
    restarted = time.monotonic()
    accepted = stream.stop()
    settle_and_audit(narrow_stack, broker, accepted, figures, since=restarted)
