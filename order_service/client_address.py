"""Who is asking: the client's address, taking X-Forwarded-For only from trusted proxies.

A pure function of the peer's address, the X-Forwarded-For header and the trusted networks
(TRUSTED_PROXIES). werkzeug's ProxyFix believes a fixed number of hops from anyone; here a hop is
believed only when the address that handed it over is trusted, so a client connecting directly
cannot name itself someone else.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from order_service.config import Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def trusted(address: str, proxies: Iterable[Network]) -> bool:
    """Whether `address` is one of the trusted proxies."""
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in proxies)


def client_address(peer: str, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The address of the client: the peer itself unless it is a trusted proxy; then, walking
    X-Forwarded-For from the right (the hop our proxy added), the first address not trusted.

    An entry that is not an address stops the walk at the last address known good, and a chain
    of nothing but trusted proxies ends at its leftmost entry.
    """
    client = peer
    if not forwarded_for or not trusted(peer, proxies):
        return client
    for hop in reversed(forwarded_for.split(",")):
        parsed = _address(hop)
        if parsed is None:
            break
        client = str(parsed)
        if not trusted(client, proxies):
            break
    return client
