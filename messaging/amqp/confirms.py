"""Publisher confirms on one channel: which outbox rows are in flight, and what a confirm settles.

Pure bookkeeping, no I/O: the relay publishes, the broker answers with basic.ack or basic.nack
(for one delivery tag, or every tag up to it), and basic.return before the ack when a mandatory
message reached no queue. A row is confirmed only when acked and not returned.
"""
from __future__ import annotations

import time
from typing import Protocol

from messaging.db.outbox import PendingMessage


class Meter(Protocol):
    """Told what each confirm settled (see metrics.PublishMeter)."""

    def settled(self, confirmed: list[tuple[str, float]], refused: list[tuple[str, str]]) -> None:
        ...


class InFlight:
    """Rows published on the current channel and not yet confirmed, by delivery tag."""

    def __init__(self, meter: Meter | None = None) -> None:
        self._rows: dict[int, PendingMessage] = {}
        self._meter = meter
        self._sent: dict[int, float] = {}  # tag -> when published (monotonic), with a meter
        self._returned: set[str] = set()
        self._tag = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: PendingMessage) -> int:
        """Record `row` as published next; return its delivery tag."""
        self._tag += 1
        self._rows[self._tag] = row
        if self._meter is not None:
            self._sent[self._tag] = time.monotonic()
        return self._tag

    def returned(self, message_id: str) -> None:
        """Note that the broker returned this message as unroutable (its ack follows)."""
        self._returned.add(message_id)

    def settle(self, tag: int, multiple: bool, acked: bool) -> tuple[list[int], list[int]]:
        """Apply one ack or nack: (ids of the rows confirmed, ids of the rows to publish again)."""
        tags = [t for t in self._rows if t <= tag] if multiple else [tag]
        confirmed: list[int] = []
        again: list[int] = []
        published: list[tuple[str, float]] = []  # for the meter: (exchange, when published)
        refused: list[tuple[str, str]] = []  # (exchange, nacked | unroutable)
        for t in [t for t in tags if t in self._rows]:
            row = self._rows.pop(t)
            returned = row.message.message_id in self._returned
            self._returned.discard(row.message.message_id)
            if acked and not returned:
                confirmed.append(row.id)
                published.append((row.message.exchange, self._sent.pop(t, 0.0)))
            else:
                again.append(row.id)
                self._sent.pop(t, None)
                refused.append((row.message.exchange, "unroutable" if returned else "nacked"))
        if self._meter is not None:
            self._meter.settled(published, refused)
        return confirmed, again

    def reset(self) -> None:
        """Forget everything: a new channel starts its delivery tags at 1 again."""
        self._rows.clear()
        self._returned.clear()
        self._sent.clear()
        self._tag = 0
