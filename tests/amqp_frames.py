"""AMQP content-header properties built byte by byte, as any client may send them.

pika cannot encode some values that the wire allows (a timestamp past the year 9999, a NaN double,
a field type it does not know), so the tests write those properties themselves: `raw_properties`
makes a `pika.BasicProperties` whose encoding is exactly the bytes given.
"""
from __future__ import annotations

import struct

import pika

CONTENT_TYPE, HEADERS, DELIVERY_MODE, MESSAGE_ID = 0x8000, 0x2000, 0x1000, 0x0080


def short_string(text: bytes) -> bytes:
    return bytes([len(text)]) + text


def field(key: bytes, kind: bytes, payload: bytes) -> bytes:
    """One table entry: its name, its type octet, its encoded value."""
    return short_string(key) + kind + payload


def table(*fields: bytes) -> bytes:
    body = b"".join(fields)
    return struct.pack(">I", len(body)) + body


def array(*values: bytes) -> bytes:
    """A field array (type 'A') payload of already typed values (type octet + payload each)."""
    body = b"".join(values)
    return struct.pack(">I", len(body)) + body


def timestamp(seconds: int) -> bytes:
    return struct.pack(">Q", seconds)


def double(value: float) -> bytes:
    return struct.pack(">d", value)


def properties_bytes(headers: bytes, message_id: bytes = b"m-1") -> bytes:
    """Encoded BasicProperties: content type JSON, `headers` (an encoded table), persistent, an id."""
    flags = CONTENT_TYPE | HEADERS | DELIVERY_MODE | MESSAGE_ID
    return (struct.pack(">H", flags) + short_string(b"application/json") + headers + bytes([2])
            + short_string(message_id))


class RawProperties(pika.BasicProperties):
    """Properties that pika publishes as the exact bytes given (the content header's property part)."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self._encoded = encoded

    def encode(self) -> list[bytes]:
        return [self._encoded]


def decoded(encoded: bytes) -> pika.BasicProperties:
    """What a consumer's pika makes of `encoded` properties."""
    properties = pika.BasicProperties()
    properties.decode(encoded)
    return properties
