"""The Idempotency-Key's syntax, the request's fingerprint and scope, and the keys in progress."""
from __future__ import annotations

import hashlib
import threading

import pytest

from order_service import idempotency
from order_service.handlers import InvalidRequest

ORDER = {"user_id": "user123", "item": "Burger", "quantity": 2}


@pytest.mark.parametrize(("raw", "key"), [
    (None, None),
    ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ("a", "a"),
    ("~!#$%&'()*+,-./:;<=>?@[]^_`{|}", "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
    ("k" * 255, "k" * 255),
    ('"' + "k" * 255 + '"', "k" * 255),
])
def test_a_key_is_read_bare_or_as_a_structured_field_string(raw, key):
    assert idempotency.parse_key(raw) == key


@pytest.mark.parametrize("raw", [
    "", '""', '"', "k" * 256, "two words", "tab\there", "caf\u00e9", 'a"b', "back\\slash", "\x00",
    "line\n", '"unclosed', "\x7f",
])
def test_a_key_outside_the_syntax_is_a_400_naming_the_header(raw):
    with pytest.raises(InvalidRequest) as refused:
        idempotency.parse_key(raw)
    assert refused.value.errors == {"Idempotency-Key": idempotency.KEY_PROBLEM}


def test_the_fingerprint_is_stable_across_releases():
    """Keys stored by one release are checked by the next (or by a replica of another version):
    the digest of an order never changes."""
    assert idempotency.fingerprint(ORDER) == hashlib.sha256(
        b'{"item":"Burger","quantity":2,"user_id":"user123"}').hexdigest()
    assert idempotency.fingerprint({**ORDER, "item": "Caf\u00e9"}) == hashlib.sha256(
        b'{"item":"Caf\\u00e9","quantity":2,"user_id":"user123"}').hexdigest()


def test_the_fingerprint_is_the_order_not_its_spelling():
    same = idempotency.fingerprint(dict(reversed(list(ORDER.items()))))
    assert idempotency.fingerprint(ORDER) == same
    for field, other in (("user_id", "user124"), ("item", "Burgers"), ("quantity", 3)):
        assert idempotency.fingerprint({**ORDER, field: other}) != same, field
    assert len(same) == 64


def test_a_key_is_scoped_to_the_signed_in_user_else_to_the_order_user():
    assert idempotency.request_key("k", None, ORDER).scope == "user123"
    assert idempotency.request_key("k", "sub-7", ORDER).scope == "sub-7"
    asked = idempotency.request_key("k", None, ORDER)
    assert (asked.key, asked.fingerprint) == ("k", idempotency.fingerprint(ORDER))


def test_the_same_order_is_replayed_and_a_different_one_refused():
    asked = idempotency.request_key("k", None, ORDER)
    earlier = idempotency.Earlier(asked.fingerprint, "order-1", "2026-12-05T00:00:00.000000Z")
    assert idempotency.replayed(earlier, asked) is earlier
    other = idempotency.request_key("k", None, {**ORDER, "quantity": 3})
    with pytest.raises(idempotency.KeyReused, match="'k' was already used for a different order"):
        idempotency.replayed(earlier, other)


def test_a_key_in_progress_is_refused_until_its_request_is_done():
    keys = idempotency.InProgress()
    asked = idempotency.request_key("k", None, ORDER)
    with keys.claim(asked):
        with pytest.raises(idempotency.KeyInProgress, match="'k' is still in progress"), keys.claim(asked):
            pass
        with keys.claim(idempotency.request_key("k", "someone-else", ORDER)):
            pass  # another caller's key of the same name
        with keys.claim(idempotency.request_key("k2", None, ORDER)):
            pass
    with keys.claim(asked):  # released
        pass
    with pytest.raises(RuntimeError), keys.claim(asked):
        raise RuntimeError("the order failed")
    with keys.claim(asked):  # released after a failure too
        pass


def test_only_one_of_many_threads_holds_a_key():
    keys, asked = idempotency.InProgress(), idempotency.request_key("k", None, ORDER)
    holding, release, outcomes = threading.Barrier(9), threading.Event(), []

    def attempt() -> None:
        try:
            with keys.claim(asked):
                outcomes.append("held")
                holding.wait(timeout=10)
                release.wait(timeout=10)
        except idempotency.KeyInProgress:
            outcomes.append("409")
            holding.wait(timeout=10)

    threads = [threading.Thread(target=attempt) for _ in range(9)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(outcomes) == ["409"] * 8 + ["held"]
