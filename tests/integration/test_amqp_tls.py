"""AMQP over TLS against a RabbitMQ node of the module's own, with a TLS listener and a CA the test makes.

One node serves every test here (booting one takes 10-20 s on 2 cores): its TLS listener on
127.0.0.1 and 127.0.0.2 presents a certificate signed by the test's CA for 127.0.0.1 and
localhost, and it verifies a client certificate when one is given. The machine's node on 5672 is
never touched. Each test has a vhost of its own on the node.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.certificates import Authority, Issued
from stack.cluster import ClusterBroker
from stack.processes import ROOT, ServiceProcess, Stack, free_port
from stack.tls_node import OTHER_LOOPBACK, LocalTlsNode
from tests.client import get_order, post_order, wait_for

pytestmark = pytest.mark.cluster  # a local node of its own: needs rabbitmq-server and rabbitmqctl


class Pki:
    """The test's CA, the broker's and a client's certificates, and an unrelated CA."""

    def __init__(self, directory: Path) -> None:
        self.ca = Authority("tls-test", directory)
        self.server = self.ca.issue("broker", ("127.0.0.1", "localhost"))
        self.client: Issued = self.ca.issue("order-client", client=True)
        self.unrelated = Authority("unrelated", directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_node(pki: Pki) -> Iterator[LocalTlsNode]:
    """The node with the TLS listeners; stopped and removed after the module."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmq-server is not installed")
    node = LocalTlsNode(pki.ca.ca_file, pki.server)
    try:
        yield node.start()
    finally:
        node.close()


@pytest.fixture
def tls_vhost(tls_node: LocalTlsNode) -> Iterator[str]:
    broker = ClusterBroker(tls_node.node)
    name = broker.create_vhost("tls")
    yield name
    broker.delete_vhost(name)


@pytest.fixture
def tls_stack(tls_node: LocalTlsNode, tls_vhost: str, pki: Pki, tmp_path: Path) -> Iterator[Stack]:
    """The services told to speak TLS to the node with the test's CA (not started)."""
    stack = Stack(tls_vhost, tmp_path, RABBITMQ_HOST=tls_node.tls_address, RABBITMQ_TLS="on",
                  RABBITMQ_TLS_CA_FILE=str(pki.ca.ca_file))
    try:
        yield stack
    finally:
        stack.close()


def connections(node: LocalTlsNode, vhost: str) -> list[tuple[bool, str]]:
    """(over TLS?, client certificate subject) of each connection into `vhost`."""
    lines = node.node.ctl("list_connections", "vhost", "ssl", "peer_cert_subject").stdout.splitlines()
    rows = [line.split("\t") + [""] for line in lines[1:]]  # the first line names the columns
    return [(row[1] == "true", row[2]) for row in rows if row[0] == vhost]


def refused(service: ServiceProcess, line: str, rounds: int = 2) -> None:
    """Wait until `service` has logged `line` for `rounds` connect rounds, still running, its /health
    503 and not consuming: it keeps retrying, it does not crash or loop on restarts."""
    wait_for(lambda: service.log().count(line) >= rounds, timeout=30,
             what=f"{service.name} to log {line!r} {rounds} times; its log:\n{service.tail()}")
    assert service.running, service.tail()
    status, body = service.health()
    assert (status, body["consuming"]) == (503, False)
    assert "Traceback" not in service.log()
    assert "cannot reach RabbitMQ (" + line in service.log(), "the reason is on the warning line itself"


def test_the_services_speak_tls_with_a_client_certificate_and_an_order_flows(tls_stack, tls_node, pki):
    for service in tls_stack.services.values():
        service.env.update(RABBITMQ_TLS_CERT_FILE=str(pki.client.cert_file),
                           RABBITMQ_TLS_KEY_FILE=str(pki.client.key_file))
    stack = tls_stack.start(timeout=60)
    order_id = post_order(stack.order_url)["order_id"]
    wait_for(lambda: get_order(stack.order_url, order_id)["status"] == "reserved", what="the reservation")
    wait_for(lambda: f"Notification sent: order_id={order_id}" in stack["notification"].log(),
             what="the notification")
    seen = connections(tls_node, stack.vhost)
    assert len(seen) == 5, seen  # Order and Inventory: a consumer and a relay each; Notification: one
    assert set(seen) == {(True, "CN=order-client")}, "every connection is TLS and shows the certificate"


def test_plain_amqp_to_the_tls_port_fails_with_one_clear_line_and_the_service_keeps_retrying(
        tls_stack, tls_node):
    inventory = tls_stack["inventory"]
    inventory.start(RABBITMQ_TLS="off", RABBITMQ_TLS_CA_FILE="")
    refused(inventory, f"{tls_node.tls_address} closed the connection before the AMQP handshake: "
                       "if it is a TLS listener, set RABBITMQ_TLS=on")


def test_tls_to_the_plain_port_says_the_port_does_not_speak_tls(tls_stack, tls_node):
    inventory = tls_stack["inventory"]
    inventory.start(RABBITMQ_HOST=tls_node.node.address)
    refused(inventory, f"TLS handshake with {tls_node.node.address} failed: wrong_version_number "
                       "(the port does not speak TLS")


def test_a_server_certificate_signed_by_another_ca_is_refused(tls_stack, tls_node, pki):
    inventory = tls_stack["inventory"]
    inventory.start(RABBITMQ_TLS_CA_FILE=str(pki.unrelated.ca_file))
    refused(inventory, f"TLS handshake with {tls_node.tls_address} failed: certificate verify failed: "
                       "self-signed certificate in certificate chain (is RABBITMQ_TLS_CA_FILE the CA "
                       "that signed the broker's certificate?)")
    assert connections(tls_node, tls_stack.vhost) == []


def test_a_certificate_for_another_host_is_refused_unless_hostname_verification_is_off(tls_stack, tls_node):
    inventory = tls_stack["inventory"]
    elsewhere = f"{OTHER_LOOPBACK}:{tls_node.tls_port}"  # the node, by an address its certificate lacks
    inventory.start(RABBITMQ_HOST=elsewhere)
    refused(inventory, f"TLS handshake with {elsewhere} failed: certificate verify failed: IP address "
                       f"mismatch, certificate is not valid for '{OTHER_LOOPBACK}'.")
    inventory.terminate()
    inventory.start(RABBITMQ_HOST=elsewhere, RABBITMQ_TLS_VERIFY_HOSTNAME="off").wait_healthy(30)
    assert connections(tls_node, tls_stack.vhost) and all(tls for tls, _ in connections(
        tls_node, tls_stack.vhost))


def test_a_host_list_whose_first_node_is_dead_connects_to_the_next_over_tls(tls_stack, tls_node):
    inventory = tls_stack["inventory"]
    inventory.start(RABBITMQ_HOST=f"127.0.0.1:{free_port()},{tls_node.tls_address}").wait_healthy(30)
    seen = connections(tls_node, tls_stack.vhost)
    assert seen and all(tls for tls, _ in seen)


def test_the_operator_tools_read_the_tls_settings(tls_stack, tls_node, pki):
    tls_stack.start("inventory")  # declares the topology the tool reads
    env = {**tls_stack["inventory"].env, "RABBITMQ_VHOST": tls_stack.vhost}
    listed = subprocess.run([sys.executable, "-m", "ops.dlq", "list"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert (listed.returncode, listed.stdout.strip()) == (0, "0 dead letter(s)"), listed.stderr[-3000:]
    wrong = subprocess.run([sys.executable, "-m", "ops.dlq", "list"], cwd=ROOT, timeout=60,
                           env={**env, "RABBITMQ_TLS_CA_FILE": str(pki.unrelated.ca_file)},
                           capture_output=True, text=True)
    assert (wrong.returncode, wrong.stderr) == (1, (
        f"error: cannot reach RabbitMQ: TLS handshake with {tls_node.tls_address} failed: certificate "
        "verify failed: self-signed certificate in certificate chain (is RABBITMQ_TLS_CA_FILE the CA that "
        "signed the broker's certificate?)\n"))
