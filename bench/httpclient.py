"""A minimal HTTP/1.1 keep-alive client on asyncio streams: just enough to POST JSON and read a reply.

It is a load generator's client, so it does as little as possible per request: the request bytes
are built once, and a reply is read as a header block plus Content-Length bytes.
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

ORDER_ID_KEY = b'"order_id":"'
MENU = ("Burger", "Pizza", "Salad", "Sushi", "Tacos", "Sandwich", "Noodles", "Coffee", "Smoothie",
        "Fries")


def host_port(url: str) -> tuple[str, int]:
    """('127.0.0.1', 8101) from 'http://127.0.0.1:8101'."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def order_requests(url: str, variants: int = 64) -> list[bytes]:
    """Ready-to-send POST /order requests with the spec's body, varied over users and items."""
    host, port = host_port(url)
    requests = []
    for i in range(variants):
        body = json.dumps({"user_id": f"user{i % 50}", "item": MENU[i % len(MENU)],
                           "quantity": 1 + i % 3}).encode()
        head = (f"POST /order HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        requests.append(head.encode() + body)
    return requests


def order_id_of(body: bytes) -> str | None:
    """The order_id of a 202 body, found without a full JSON parse."""
    start = body.find(ORDER_ID_KEY)
    if start < 0:
        return None
    start += len(ORDER_ID_KEY)
    end = body.find(b'"', start)
    return body[start:end].decode() if end > start else None


def _content_length(head: bytes) -> int:
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    end = head.find(b"\r\n", start + 2)
    return int(head[start + 17:end])


class Connection:
    """One keep-alive connection; reopened after an error or a `Connection: close`."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one request and return (status, body); raises on a broken connection."""
        if self._writer is None:
            await self.open()
        try:
            self._writer.write(request)
            if self._writer.transport.get_write_buffer_size() > 65536:
                await self._writer.drain()
            head = await self._reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            body = await self._reader.readexactly(length) if length else b""
        except BaseException:
            self.close()
            raise
        if b"\r\nconnection: close" in head.lower():
            self.close()
        return int(head[9:12]), body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
