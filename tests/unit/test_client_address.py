"""Who the client is: X-Forwarded-For believed only hop by hop from trusted proxies."""
from __future__ import annotations

import pytest

from order_service.client_address import client_address, trusted
from order_service.config import networks

GATEWAYS = networks("10.0.0.0/24, 2001:db8::1")


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("203.0.113.7", None, "203.0.113.7"),
    ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # an untrusted peer cannot name another
    ("10.0.0.2", None, "10.0.0.2"),  # a gateway's own request
    ("10.0.0.2", "", "10.0.0.2"),
    ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
    ("10.0.0.2", "192.0.2.9, 198.51.100.1", "198.51.100.1"),  # what the client wrote is not believed
    ("10.0.0.2", "192.0.2.9, 198.51.100.1, 10.0.0.3", "198.51.100.1"),  # two gateways in a row
    ("10.0.0.2", "10.0.0.7, 10.0.0.3", "10.0.0.7"),  # nothing but gateways: the leftmost
    ("10.0.0.2", "198.51.100.1, not-an-address", "10.0.0.2"),  # garbage stops the walk
    ("10.0.0.2", "garbage, 198.51.100.1", "198.51.100.1"),
    ("2001:db8::1", "2001:db8::42", "2001:db8::42"),
    ("2001:db8::2", "198.51.100.1", "2001:db8::2"),
    ("10.0.0.2", " 198.51.100.1 ", "198.51.100.1"),
])
def test_client_address(peer, forwarded, expected):
    assert client_address(peer, forwarded, GATEWAYS) == expected


def test_nobody_is_trusted_by_default():
    assert client_address("10.0.0.2", "198.51.100.1", ()) == "10.0.0.2"
    assert not trusted("10.0.0.2", ())
    assert not trusted("", GATEWAYS)
    assert trusted("10.0.0.255", GATEWAYS) and not trusted("10.0.1.0", GATEWAYS)
