"""Header values pika cannot decode or re-encode: read around them, write them back as text."""
from __future__ import annotations

import calendar
import decimal
import struct
import threading
from datetime import UTC, datetime

import pika
import pika.data
import pytest

import messaging.amqp  # noqa: F401 - importing the room installs the tolerant decoding
from messaging.amqp import header_values
from messaging.amqp.delivery import Delivery, split_unfit
from messaging.amqp.header_values import Unreadable, unreadable, writable
from tests.amqp_frames import array, decoded, double, field, properties_bytes, table, timestamp

PAST_9999 = 2**63 + 5
GOOD = field(b"good", b"S", struct.pack(">I", 2) + b"ok")


def headers_of(*fields: bytes) -> pika.BasicProperties:
    return decoded(properties_bytes(table(*fields)))


@pytest.mark.parametrize(("kind", "payload", "name", "error"), [
    (b"T", timestamp(PAST_9999), "timestamp", "OverflowError"),
    (b"T", timestamp(2**64 - 1), "timestamp", "OverflowError"),
    (b"d", double(float("nan")), "double", "ValueError"),
    (b"d", double(float("inf")), "double", "OverflowError"),
    (b"f", struct.pack(">f", float("-inf")), "float", "OverflowError"),
], ids=["timestamp-2^63+5", "timestamp-2^64-1", "double-nan", "double-inf", "float-minus-inf"])
def test_a_value_pika_cannot_decode_becomes_text_and_the_rest_is_read(kind, payload, name, error):
    properties = headers_of(field(b"bad", kind, payload), GOOD)
    bad = properties.headers["bad"]
    assert isinstance(bad, Unreadable) and bad == f"unreadable {name} 0x{payload.hex()}"
    assert properties.headers["good"] == "ok", "the headers after it are read"
    assert properties.message_id == "m-1" and properties.delivery_mode == 2, "so are the properties"
    [note] = unreadable(properties)
    assert note.startswith(f"header 'bad': {name} unreadable ({error}: ")


def test_a_truncated_value_of_a_type_that_has_no_name_is_named_by_its_type_octet():
    assert header_values.decode_value(b"I\x00\x01", 0) == ("unreadable type b'I' 0x0001", 5)


def test_properties_are_decoded_from_the_offset_given():
    encoded = properties_bytes(table(field(b"bad", b"T", timestamp(PAST_9999))))
    properties = pika.BasicProperties()
    properties.decode(b"junk" + encoded, 4)
    assert properties.message_id == "m-1" and len(unreadable(properties)) == 1


def test_one_bad_value_inside_an_array_or_a_nested_table_spoils_only_itself():
    inner = table(field(b"deep", b"T", timestamp(PAST_9999)), GOOD)
    properties = headers_of(
        field(b"list", b"A", array(b"I" + struct.pack(">i", 7), b"T" + timestamp(PAST_9999))),
        field(b"nested", b"F", inner))
    assert properties.headers["list"] == [7, f"unreadable timestamp 0x{timestamp(PAST_9999).hex()}"]
    assert properties.headers["nested"]["good"] == "ok"
    assert isinstance(properties.headers["nested"]["deep"], Unreadable)
    notes = unreadable(properties)
    assert [n.split(" unreadable")[0] for n in notes] == \
        ["header 'list': timestamp", "header 'nested': header 'deep': timestamp"]


def test_a_field_type_pika_does_not_know_ends_its_table_but_not_the_properties():
    properties = headers_of(GOOD, field(b"odd", b"Z", b"\x01\x02\x03"), field(b"later", b"t", b"\x01"))
    assert properties.headers == {"good": "ok", "odd": "unreadable type b'Z'"}, \
        "what follows an unknown type cannot be found: the table ends there"
    assert properties.message_id == "m-1"
    [note] = unreadable(properties)
    assert note.startswith("header 'odd': field type b'Z' unreadable (InvalidFieldTypeException)")
    assert "12 byte(s) of the table skipped" in note


def test_an_unknown_type_inside_an_array_makes_the_whole_array_unreadable():
    body = array(b"Z\x01")
    properties = headers_of(field(b"list", b"A", body), GOOD)
    assert properties.headers == {"list": f"unreadable array 0x{body.hex()}", "good": "ok"}


def test_a_long_unreadable_value_shows_only_its_first_bytes():
    body = array(*[b"T" + timestamp(PAST_9999)] * 20)
    properties = headers_of(field(b"list", b"A", body))
    assert properties.headers["list"] == [f"unreadable timestamp 0x{timestamp(PAST_9999).hex()}"] * 20
    odd = array(*[b"I" + struct.pack(">i", n) for n in range(40)], b"Z")
    shown = headers_of(field(b"list", b"A", odd)).headers["list"]
    assert shown == f"unreadable array 0x{odd[:header_values.MAX_RAW_SHOWN].hex()}"


def test_properties_pika_can_decode_are_decoded_as_before_and_carry_no_note():
    headers = {"s": "text", "n": -5, "big": 2**40, "yes": True, "none": None, "raw": b"\xff",
               "d": decimal.Decimal("1.25"), "when": datetime(2026, 12, 4, tzinfo=UTC),
               "list": [1, "a", {"x": 1}], "table": {"inner": {"deeper": 1}}}
    encoded = pika.BasicProperties(headers=headers, message_id="m").encode()
    properties = decoded(b"".join(encoded))
    assert properties.headers == headers and properties.message_id == "m"
    assert unreadable(properties) == ()
    assert unreadable(pika.BasicProperties()) == ()


def test_a_decoding_failure_outside_properties_is_read_around_without_a_note():
    encoded = table(field(b"t", b"T", timestamp(PAST_9999)))
    results: list = []

    def decode() -> None:  # in a thread that never decoded properties, then after it did
        results.append(pika.data.decode_table(encoded, 0))
        headers_of(field(b"t", b"T", timestamp(PAST_9999)))
        results.append(pika.data.decode_table(encoded, 0))

    thread = threading.Thread(target=decode)
    thread.start()
    thread.join(timeout=10)
    assert len(results) == 2, "decoding raised in the thread"
    for value, end in results:
        assert isinstance(value["t"], Unreadable) and end == len(encoded)


def test_every_note_of_a_message_is_in_its_rejection():
    bad = field(b"a", b"T", timestamp(PAST_9999))
    properties = headers_of(bad, field(b"b", b"T", timestamp(PAST_9999)))
    first, second = unreadable(properties)
    [rejection] = split_unfit([Delivery(1, "orders", "order.placed", False, properties, b"{}")], 1024)[1]
    assert (rejection.reason, rejection.error) == ("undecodable-properties", f"{first}; {second}")


def test_install_is_idempotent_and_replaces_pikas_decoders():
    header_values.install()
    header_values.install()
    assert pika.data.decode_value is header_values.decode_value
    assert pika.data.decode_table is header_values.decode_table
    assert pika.spec.BasicProperties.decode is header_values._decode_properties


def test_writable_leaves_what_pika_can_encode_alone():
    headers = {"s": "text", "n": 2**63 - 1, "neg": -(2**63), "list": [1, {"a": "b"}], "none": None,
               "when": datetime(2026, 1, 1, tzinfo=UTC), "d": decimal.Decimal("0.5")}
    assert writable(headers) == (headers, [])


def test_writable_rewrites_what_pika_cannot_encode_and_names_it():
    huge = int(1e300)  # what pika decodes a double 1e300 into
    headers = {"big": huge, "list": [1, 2**64], "nested": {"deep": {"x": -(2**63) - 1}},
               "unread": Unreadable("unreadable timestamp 0x00"), "fine": 1, b"\xff": 2**70}
    clean, rewritten = writable(headers)
    assert clean == {"big": str(huge), "list": [1, str(2**64)], "nested": {"deep": {"x": str(-(2**63) - 1)}},
                     "unread": "unreadable timestamp 0x00", "fine": 1, b"\xff": str(2**70)}
    assert type(clean["unread"]) is str
    assert rewritten == ["big", "list", "nested", "unread", "\ufffd"]
    pika.data.encode_table([], clean)  # and now pika can write it


def test_a_timestamp_header_pika_decoded_is_written_back_unchanged():
    when = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    properties = headers_of(field(b"t", b"T", timestamp(calendar.timegm(when.utctimetuple()))))
    assert writable(properties.headers) == ({"t": when}, [])


def test_what_rabbitmq_passes_on_and_pika_decodes_oddly_is_written_back_as_it_came():
    """Values that reach a consumer (tried against RabbitMQ 3.10) and decode without an error: a
    key and a long string that are not UTF-8 stay bytes, a decimal with 255 places, a short-short
    int; pika writes each back, so none needs rewriting."""
    properties = headers_of(field(b"\xff\xfe", b"t", b"\x01"),
                            field(b"raw", b"S", struct.pack(">I", 2) + b"\xff\xfe"),
                            field(b"dec", b"D", b"\xff" + struct.pack(">i", -1)),
                            field(b"tiny", b"b", b"\x80"))
    assert properties.headers == {b"\xff\xfe": True, "raw": b"\xff\xfe",
                                  "dec": decimal.Decimal("-1E-255"), "tiny": -128}
    assert writable(properties.headers) == (properties.headers, [])
    again = decoded(b"".join(pika.BasicProperties(headers=properties.headers).encode()))
    assert again.headers == properties.headers


def test_a_message_id_that_is_not_utf8_is_kept_as_bytes_and_can_be_written_back():
    encoded = properties_bytes(table(), message_id=b"\xff" * 255)  # the longest short string
    properties = decoded(encoded)
    assert properties.message_id == b"\xff" * 255 and unreadable(properties) == ()
    copy = pika.BasicProperties(message_id=properties.message_id)
    assert decoded(b"".join(copy.encode())).message_id == b"\xff" * 255
