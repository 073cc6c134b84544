"""RABBITMQ_TLS and its files: the TLS options each node's connection gets, and the refusals."""
from __future__ import annotations

import ssl

import pytest

from messaging.settings import ConfigError, broker_settings
from stack.certificates import Authority


@pytest.fixture
def ca(tmp_path):
    return Authority("test", tmp_path)


def on(**env: str) -> dict[str, str]:
    return {"RABBITMQ_TLS": "on", **{f"RABBITMQ_TLS_{k.upper()}": v for k, v in env.items()}}


def test_tls_is_off_by_default_and_the_port_is_5672():
    broker = broker_settings({})
    assert broker.tls is None and broker.port == 5672
    assert broker.parameters().ssl_options is None


def test_tls_on_makes_5671_the_default_port_of_every_node_without_one():
    broker = broker_settings({**on(), "RABBITMQ_HOST": "a,b:6000"})
    assert broker.nodes == (("a", 5671), ("b", 6000))
    assert broker_settings({**on(), "RABBITMQ_PORT": "5673"}).nodes == (("localhost", 5673),)


def test_each_node_is_dialled_with_its_own_name_and_a_verifying_context(ca):
    broker = broker_settings({**on(ca_file=str(ca.ca_file)), "RABBITMQ_HOST": "rabbit1,10.0.0.2:5676"})
    for node, host in enumerate(("rabbit1", "10.0.0.2")):
        options = broker.parameters(node).ssl_options
        assert options.server_hostname == host
        assert options.context.verify_mode == ssl.CERT_REQUIRED and options.context.check_hostname
    [trusted] = broker.parameters().ssl_options.context.get_ca_certs()  # that CA, and only it
    assert dict(item[0] for item in trusted["subject"]) == {"commonName": "test"}


def test_hostname_verification_off_still_verifies_the_chain(ca):
    broker = broker_settings(on(ca_file=str(ca.ca_file), verify_hostname="off"))
    context = broker.parameters().ssl_options.context
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_without_a_ca_file_the_system_cas_are_trusted():
    tls = broker_settings(on()).tls
    assert tls is not None and tls.ca_file is None
    assert tls.context().verify_mode == ssl.CERT_REQUIRED


def test_a_client_certificate_and_its_key_are_loaded(ca):
    client = ca.issue("client", client=True)
    tls = broker_settings(on(ca_file=str(ca.ca_file), cert_file=str(client.cert_file),
                             key_file=str(client.key_file))).tls
    assert tls is not None and (tls.cert_file, tls.key_file) == (str(client.cert_file),
                                                                 str(client.key_file))


def test_files_are_refused_when_they_cannot_be_used(ca, tmp_path):
    one, two = ca.issue("one", client=True), ca.issue("two", client=True)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match="RABBITMQ_TLS_CA_FILE holds no usable CA certificate"):
        broker_settings(on(ca_file=str(not_pem)))
    with pytest.raises(ConfigError, match="are not a certificate and its private key"):
        broker_settings(on(cert_file=str(one.cert_file), key_file=str(two.key_file)))


@pytest.mark.parametrize("env, message", [
    ({"RABBITMQ_TLS": "yes"}, "RABBITMQ_TLS must be one of ON, OFF, got 'yes'"),
    ({"RABBITMQ_TLS_CA_FILE": "/etc/hostname"}, "RABBITMQ_TLS_CA_FILE is set but RABBITMQ_TLS is off"),
    ({"RABBITMQ_TLS_CERT_FILE": "c.pem"}, "RABBITMQ_TLS_CERT_FILE is set but RABBITMQ_TLS is off"),
    ({"RABBITMQ_TLS_KEY_FILE": "k.pem"}, "RABBITMQ_TLS_KEY_FILE is set but RABBITMQ_TLS is off"),
    ({"RABBITMQ_TLS_VERIFY_HOSTNAME": "maybe"}, "RABBITMQ_TLS_VERIFY_HOSTNAME must be one of ON, OFF"),
    (on(verify_hostname="maybe"), "RABBITMQ_TLS_VERIFY_HOSTNAME must be one of ON, OFF"),
    (on(ca_file="/nonexistent/ca.pem"), "RABBITMQ_TLS_CA_FILE must be a readable file, got '/nonexistent"),
    (on(ca_file="/tmp"), "RABBITMQ_TLS_CA_FILE must be a readable file"),
    (on(cert_file="/etc/hostname"), "RABBITMQ_TLS_CERT_FILE is set but RABBITMQ_TLS_KEY_FILE is not"),
    (on(key_file="/etc/hostname"), "RABBITMQ_TLS_KEY_FILE is set but RABBITMQ_TLS_CERT_FILE is not"),
])
def test_bad_tls_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message):
        broker_settings(env)
