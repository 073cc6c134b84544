"""Forget what is older than the deduplication window: the pruning of inbox-like tables.

The inbox, the redelivery counts and NotificationService's notifications are each a consumer's
memory of what it handled; OrderService's Idempotency-Keys are its memory of the requests it
answered. They would grow by a row per message forever. A `Pruner` thread per process deletes
their rows older than DEDUP_RETENTION (or their table's own window: IDEMPOTENCY_RETENTION), at
start and then every DEDUP_PRUNE_INTERVAL, in small batches of one short transaction each (on
SQLite through the group commit), so the writers on the hot path wait for at most one batch.
Business records (orders, reservations) are never listed here.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from messaging.db.backend import Connection
from messaging.db.dialect import Dialect
from messaging.settings import RetentionSettings

T = TypeVar("T")

logger = logging.getLogger(__name__)

BATCH = 500  # rows per delete: one short transaction
BATCH_PAUSE = 0.005  # seconds between batches, so writers of other processes get the file lock


class Retained(Protocol):
    """A store whose tables have a deduplication window (see MessagingStore.RETAINED)."""

    RETAINED: tuple[tuple[str, str, str], ...]
    windows: Mapping[str, float]  # a table's own window, where it is not the deduplication window

    @property
    def dialect(self) -> Dialect: ...

    def write(self, job: Callable[[Connection], T]) -> T: ...


def delete_batch(conn: Connection, table: str, key: str, column: str, cutoff: float, limit: int) -> int:
    """Delete up to `limit` rows of `table` whose `column` is older than `cutoff`; return how many."""
    return conn.execute(
        f"DELETE FROM {table} WHERE {key} IN"
        f" (SELECT {key} FROM {table} WHERE {column} < ? LIMIT ?)", (cutoff, limit)).rowcount


def prune(store: Retained, now: float, window: float, batch: int = BATCH,
          stopping: threading.Event | None = None) -> dict[str, int]:
    """Delete every retained row older than `window` seconds before `now` (or than its table's
    own window), `batch` rows per transaction.

    Returns the rows deleted per table. Stops early, between batches, once `stopping` is set.
    """
    stopping = stopping or threading.Event()
    deleted: dict[str, int] = {}
    for table, key, column in store.RETAINED:
        cutoff = now - store.windows.get(table, window)
        deleted[table] = 0
        while not stopping.is_set():
            count = store.write(functools.partial(delete_batch, table=table, key=key,
                                                  column=column, cutoff=cutoff, limit=batch))
            deleted[table] += count
            if count < batch:
                break
            stopping.wait(BATCH_PAUSE)
    return deleted


class Pruner(threading.Thread):
    """Prune `store` at start and then every `settings.prune_interval` seconds, until stopped.

    `pruned` counts the rows deleted per table since start (for /health).
    """

    def __init__(self, store: Retained, settings: RetentionSettings, batch: int = BATCH,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="dedup-pruner", daemon=True)
        self._store, self._settings, self._batch, self._clock = store, settings, batch, clock
        self._stopping = threading.Event()
        self.pruned: dict[str, int] = {table: 0 for table, _, _ in store.RETAINED}

    def run(self) -> None:
        while not self._stopping.is_set():
            self.prune_once()
            self._stopping.wait(self._settings.prune_interval)

    def prune_once(self) -> None:
        """Delete what has left the window now; a database error waits for the next round."""
        try:
            deleted = prune(self._store, self._clock(), self._settings.window, self._batch,
                            self._stopping)
        except self._store.dialect.errors as exc:  # locked, connection lost: try again later
            logger.warning("pruning the deduplication records failed: %r", exc)
            return
        for table, count in deleted.items():
            self.pruned[table] += count
        if any(deleted.values()):
            logger.info("pruned records past their window (%.0f s unless the table has its own): %s",
                        self._settings.window, ", ".join(f"{t} {n}" for t, n in deleted.items()))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the batch in hand."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=timeout)
