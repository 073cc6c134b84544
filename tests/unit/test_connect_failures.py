"""The one line a failed connect is logged with: real TLS handshakes over a socket pair, no broker."""
from __future__ import annotations

import logging
import socket
import ssl
import threading

import pika.exceptions
import pytest

from messaging.amqp import connect_failures, connection
from messaging.amqp.connection import connect
from messaging.settings import BrokerSettings
from messaging.tls import TlsSettings
from stack.certificates import Authority
from tests.unit.fake_pika import FakeEvent


@pytest.fixture
def authorities(tmp_path):
    return Authority("ours", tmp_path), Authority("theirs", tmp_path)


def handshake_error(server: ssl.SSLContext | None, client: ssl.SSLContext, host: str) -> BaseException:
    """The error a client handshake meets against `server` (None: a peer speaking plain AMQP)."""
    ours, theirs = socket.socketpair()

    def serve() -> None:
        try:
            if server is None:
                theirs.recv(4096)  # the ClientHello, answered with AMQP's protocol header
                theirs.sendall(b"AMQP\x00\x00\x09\x01")
            else:
                server.wrap_socket(theirs, server_side=True).do_handshake()
        except (ssl.SSLError, OSError):
            pass
        finally:
            theirs.close()

    peer = threading.Thread(target=serve)
    peer.start()
    try:
        client.wrap_socket(ours, server_hostname=host).do_handshake()
    except ssl.SSLError as exc:
        return exc
    finally:
        ours.close()
        peer.join(10)
    raise AssertionError("the handshake succeeded")


def server_context(authority: Authority) -> ssl.SSLContext:
    issued = authority.issue("broker", ("127.0.0.1", "localhost"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    return context


def test_a_certificate_from_another_ca_is_explained_with_the_ca_setting(authorities):
    ours, theirs = authorities
    error = handshake_error(server_context(theirs), TlsSettings(str(ours.ca_file)).context(), "127.0.0.1")
    line = connect_failures.explain(error, "127.0.0.1", 5671, tls=True)
    assert line == ("TLS handshake with 127.0.0.1:5671 failed: certificate verify failed: unable to get "
                    "local issuer certificate (is RABBITMQ_TLS_CA_FILE the CA that signed the broker's "
                    "certificate?)")


def test_a_certificate_for_another_host_is_explained_with_the_hostname_setting(authorities):
    ours, _ = authorities
    error = handshake_error(server_context(ours), TlsSettings(str(ours.ca_file)).context(), "127.0.0.2")
    line = connect_failures.explain(error, "127.0.0.2", 5671, tls=True)
    assert line is not None and line.startswith(
        "TLS handshake with 127.0.0.2:5671 failed: certificate verify failed: IP address mismatch")
    assert line.endswith("RABBITMQ_TLS_VERIFY_HOSTNAME=off skips this check)")


def test_the_same_certificate_passes_when_the_host_name_check_is_off(authorities):
    ours, _ = authorities
    with pytest.raises(AssertionError, match="the handshake succeeded"):
        handshake_error(server_context(ours), TlsSettings(str(ours.ca_file), verify_hostname=False).context(),
                        "127.0.0.2")


def test_tls_to_a_plain_port_says_the_port_does_not_speak_tls(authorities):
    ours, _ = authorities
    error = handshake_error(None, TlsSettings(str(ours.ca_file)).context(), "127.0.0.1")
    assert connect_failures.explain(error, "127.0.0.1", 5672, tls=True) == (
        "TLS handshake with 127.0.0.1:5672 failed: wrong_version_number (the port does not speak TLS: "
        "is it the broker's TLS listener (usually 5671)?)")


def test_plain_amqp_cut_off_by_a_tls_port_suggests_rabbitmq_tls():
    error = pika.exceptions.IncompatibleProtocolError("StreamLostError: connection reset")
    assert connect_failures.explain(error, "127.0.0.1", 5671, tls=False) == (
        "127.0.0.1:5671 closed the connection before the AMQP handshake: if it is a TLS listener, "
        "set RABBITMQ_TLS=on")
    assert connect_failures.explain(error, "127.0.0.1", 5671, tls=True) is None


def test_ordinary_failures_need_no_explanation():
    assert connect_failures.explain(ConnectionRefusedError(), "h", 1, tls=True) is None
    assert connect_failures.explain(pika.exceptions.StreamLostError("eof"), "h", 1, tls=False) is None


def test_connect_logs_the_explained_failure_of_any_node_once_per_round(monkeypatch, caplog, authorities):
    ours, theirs = authorities
    refused = handshake_error(server_context(theirs), TlsSettings(str(ours.ca_file)).context(), "a")
    outcomes: list[BaseException] = [refused, ConnectionRefusedError()] * 2  # the explained one first

    def open_declared(settings, node):
        raise outcomes.pop(0)
    monkeypatch.setattr(connection, "open_declared", open_declared)
    stopping = FakeEvent()
    stopping.on_wait = lambda timeout: len(stopping.waits) == 2 and stopping.set()
    settings = BrokerSettings(host="a:5671,b:1", tls=TlsSettings())
    with caplog.at_level(logging.WARNING, logger="messaging.amqp.connection"):
        assert connect(settings, stopping, "svc") is None
    lines = [r.getMessage().rsplit(" retrying", 1)[0] for r in caplog.records]
    assert len(lines) == 2 and len(set(lines)) == 1
    assert lines[0] == ("svc cannot reach RabbitMQ (TLS handshake with a:5671 failed: certificate verify "
                        "failed: unable to get local issuer certificate (is RABBITMQ_TLS_CA_FILE the CA that "
                        "signed the broker's certificate?));")
