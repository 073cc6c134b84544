"""Header values pika cannot decode or cannot write back, made harmless.

pika decodes a message's header table before the consumer sees the message, and some values that
RabbitMQ passes on make it raise: a timestamp past the year 9999, a float or double that is NaN or
infinite, a field type it does not know. The exception leaves the consume loop, the connection is
dropped and the message comes back at the head of the queue, for ever. Other values decode but
cannot be encoded again: pika turns every double into an int, so 1e300 becomes an int of 301 digits
that no AMQP integer holds, and publishing it to the dead-letter exchange fails.

`install()` makes pika's table decoding tolerant: a value that cannot be decoded becomes an
`Unreadable` string (its type and raw bytes), and the rest of the table is still read. A field type
of unknown size ends its table there. The properties of such a message carry `unreadable`, a note
for each substitution, and the consume loop dead-letters the message with reason
`undecodable-properties`. `writable()` turns any header table into one that pika can encode,
naming the headers it had to rewrite.
"""
from __future__ import annotations

import struct
import threading
from collections.abc import Mapping
from typing import Any

import pika.data
import pika.exceptions
import pika.spec

UNDECODABLE = "undecodable-properties"
MAX_RAW_SHOWN = 64  # bytes of an unreadable value kept, as hex, in its substitute

# Sizes of the fixed-width field types after their type octet; the length-prefixed ones follow.
_FIXED = {b"t": 1, b"b": 1, b"B": 1, b"U": 2, b"u": 2, b"s": 2, b"I": 4, b"i": 4, b"f": 4,
          b"D": 5, b"L": 8, b"l": 8, b"d": 8, b"T": 8, b"V": 0}
_PREFIXED = (b"S", b"x", b"A", b"F")
_NAMES = {b"T": "timestamp", b"d": "double", b"f": "float", b"D": "decimal", b"A": "array",
          b"F": "table", b"S": "string", b"x": "byte array"}

_pika_decode_value = pika.data.decode_value
_pika_properties_decode = pika.spec.BasicProperties.decode
_notes = threading.local()  # the substitutions made while one frame's properties are decoded


class Unreadable(str):
    """What stands in a header table for a value that could not be decoded."""


def install() -> None:
    """Make pika's header decoding tolerant (idempotent; affects every connection in the process)."""
    pika.data.decode_value = decode_value
    pika.data.decode_table = decode_table
    pika.spec.BasicProperties.decode = _decode_properties  # type: ignore[method-assign]


def decode_value(encoded: bytes, offset: int) -> tuple[Any, int]:
    """pika's decoding of one field value, with an `Unreadable` for a value it cannot decode."""
    try:
        return _pika_decode_value(encoded, offset)
    except (ValueError, OverflowError, OSError, struct.error, pika.exceptions.AMQPError) as exc:
        kind = encoded[offset:offset + 1]
        end = _value_end(encoded, offset)
        if end is None:
            raise  # a type of unknown size: the table that holds it ends here (decode_table)
        name = _NAMES.get(kind, f"type {kind!r}")
        raw = encoded[offset + 1:end]
        _note(f"{name} unreadable ({type(exc).__name__}: {exc})")
        return Unreadable(f"unreadable {name} 0x{raw[:MAX_RAW_SHOWN].hex()}"), end


def decode_table(encoded: bytes, offset: int) -> tuple[dict, int]:
    """Decode a field table; a value of unknown type and size ends it, noted, the rest skipped."""
    size = struct.unpack_from(">I", encoded, offset)[0]
    offset += 4
    limit = offset + size
    table: dict = {}
    notes = getattr(_notes, "current", None)
    while offset < limit:
        key, offset = pika.data.decode_short_string(encoded, offset)
        noted = len(notes or ())
        try:
            table[key], offset = pika.data.decode_value(encoded, offset)
        except Exception as exc:  # whatever it is, the table's length is known: skip to its end
            kind = encoded[offset:offset + 1]
            _note(f"field type {kind!r} unreadable ({type(exc).__name__}); "
                  f"{limit - offset} byte(s) of the table skipped")
            table[key] = Unreadable(f"unreadable type {kind!r}")
            offset = limit
        if notes is not None:  # say which header each note made for this value is about
            notes[noted:] = [f"header {key!r}: {note}" for note in notes[noted:]]
    return table, limit


def _value_end(encoded: bytes, offset: int) -> int | None:
    """Where the value at `offset` ends, from its type octet; None for an unknown type."""
    kind = encoded[offset:offset + 1]
    if kind in _FIXED:
        return offset + 1 + _FIXED[kind]
    if kind in _PREFIXED:
        return offset + 5 + struct.unpack_from(">I", encoded, offset + 1)[0]
    return None


def _note(text: str) -> None:
    notes = getattr(_notes, "current", None)
    if notes is not None:
        notes.append(text)


def _decode_properties(self: pika.spec.BasicProperties, encoded: bytes, offset: int = 0):
    notes: list[str] = []
    _notes.current = notes
    try:
        return _pika_properties_decode(self, encoded, offset)
    finally:
        _notes.current = None
        if notes:
            self.unreadable = tuple(notes)  # type: ignore[attr-defined]


def unreadable(properties: pika.spec.BasicProperties) -> tuple[str, ...]:
    """The notes on what could not be decoded in `properties` (empty when all could)."""
    return getattr(properties, "unreadable", ())


def writable(headers: Mapping) -> tuple[dict, list[str]]:
    """A copy of `headers` that pika can encode, and the names of the headers it had to rewrite."""
    clean: dict = {}
    rewritten: list[str] = []
    for key, value in headers.items():
        clean[key], changed = _writable(value)
        if changed:
            rewritten.append(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key))
    return clean, rewritten


def _writable(value: Any) -> tuple[Any, bool]:
    """`value` in a form pika can encode, and whether it had to change."""
    if isinstance(value, Unreadable):
        return str(value), True
    if isinstance(value, Mapping):
        clean, rewritten = writable(value)
        return clean, bool(rewritten)
    if isinstance(value, list):
        items = [_writable(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    try:
        pika.data.encode_value([], value)
    except Exception:  # e.g. an int beyond 64 bits: pika raises struct.error
        return str(value), True
    return value, False
