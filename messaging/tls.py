"""AMQP over TLS: what a connection trusts and presents, and the SSL context it is built from.

Reading the RABBITMQ_TLS_* variables is `messaging.settings`' job; this module only turns them into
an `ssl.SSLContext` and pika's `SSLOptions`. The broker's certificate is always verified against
the CA file (or the system's CAs); only the check that it names the host dialled can be turned off.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass

import pika


@dataclass(frozen=True)
class TlsSettings:
    """How to speak TLS to RabbitMQ."""

    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # a client certificate, for brokers that ask for one
    key_file: str | None = None
    verify_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker's certificate (raises ssl.SSLError or OSError
        on an unreadable or unusable file)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.check_hostname = self.verify_hostname  # the chain is verified either way
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def options(self, host: str) -> pika.SSLOptions:
        """pika's TLS options for dialling `host` (the name the certificate must carry)."""
        return pika.SSLOptions(self.context(), server_hostname=host)
