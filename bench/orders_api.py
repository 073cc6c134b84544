"""What the benchmark asks OrderService between load runs: backlog, settling, and every order."""
from __future__ import annotations

import sys
import time
from typing import Any

import requests

PAGE = 500


class OrderApi:
    """OrderService's HTTP API, read sparingly (one small request per poll)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = requests.Session()

    def pending(self) -> int:
        """Orders not yet final (status accepted), as GET /orders counts them (up to its limit)."""
        page = self._http.get(f"{self.url}/orders", params={"status": "accepted", "limit": 1},
                              timeout=30)
        page.raise_for_status()
        return page.json()["count"]

    def outbox_backlog(self) -> int:
        """OrderPlaced events still in the outbox (unconfirmed or about to be deleted)."""
        return self._http.get(f"{self.url}/health", timeout=30).json()["outbox_backlog"]

    def wait_settled(self, timeout: float, poll: float = 0.2) -> float:
        """Wait until no order is pending; return the seconds waited (raises TimeoutError)."""
        start = next_print = time.monotonic()
        while True:
            left = self.pending()
            if left == 0:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{left} orders still not final after {timeout:.0f}s")
            if time.monotonic() >= next_print + 1.0:
                next_print = time.monotonic()
                print(f"  [settle] {next_print - start:5.0f}s  {left} orders not final yet",
                      file=sys.stderr, flush=True)
            time.sleep(poll)

    def all_orders(self) -> list[dict[str, Any]]:
        """Every order, newest first, paging through GET /orders with its cursor (limit 500)."""
        found: list[dict[str, Any]] = []
        params: dict[str, int | str] = {"limit": PAGE}
        while True:
            page = self._http.get(f"{self.url}/orders", params=params, timeout=60)
            page.raise_for_status()
            body = page.json()
            found.extend(body["orders"])
            if body["next"] is None:
                return found
            params["before"] = body["next"]

    def close(self) -> None:
        self._http.close()
