"""Why a connection to RabbitMQ failed, in words an operator can act on.

Most failures (a refused port, a lost stream) need no words beyond their class name. A failed TLS
handshake, and plain AMQP sent to a TLS port, are explained with the node and what to check, since
the exception alone (`SSLCertVerificationError`, `IncompatibleProtocolError`) does not say which
setting is wrong.
"""
from __future__ import annotations

import ssl

import pika.exceptions

CA_HINT = "is RABBITMQ_TLS_CA_FILE the CA that signed the broker's certificate?"
NAME_HINT = ("does the broker's certificate name the host in RABBITMQ_HOST? "
             "RABBITMQ_TLS_VERIFY_HOSTNAME=off skips this check")
NOT_TLS_HINT = "the port does not speak TLS: is it the broker's TLS listener (usually 5671)?"
PLAIN_TO_TLS = ("{where} closed the connection before the AMQP handshake: if it is a TLS listener, "
                "set RABBITMQ_TLS=on")


def explain(error: BaseException, host: str, port: int, tls: bool) -> str | None:
    """One line on why connecting to `host`:`port` failed; None when the class name says it all."""
    where = f"{host}:{port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = getattr(error, "verify_message", None) or str(error)
        hint = NAME_HINT if "mismatch" in detail or "hostname" in detail else CA_HINT
        return f"TLS handshake with {where} failed: certificate verify failed: {detail} ({hint})"
    if isinstance(error, ssl.SSLError):
        detail = getattr(error, "reason", None) or str(error)
        if detail in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return f"TLS handshake with {where} failed: {detail.lower()} ({NOT_TLS_HINT})"
        return f"TLS handshake with {where} failed: {detail}"
    if isinstance(error, pika.exceptions.IncompatibleProtocolError) and not tls:
        return PLAIN_TO_TLS.format(where=where)
    return None
