"""What each gunicorn worker runs beside its requests: the outbox relay, the status consumer, the
WAL checkpoints and the pruning of the deduplication records (the orders themselves are kept).

All are started after the fork (gunicorn's post_worker_init), each with its own connection.
"""
from __future__ import annotations

import logging
import os
import threading

from messaging import topology
from messaging.amqp.consume_loop import ConsumeLoop
from messaging.amqp.relay import Relay
from messaging.db.retention import Pruner
from messaging.service import TOPOLOGY_REFUSED, report_refusal
from order_service.config import Settings
from order_service.store import OrderStore
from order_service.unit_of_work import StatusUnitOfWork

logger = logging.getLogger(__name__)


class Background:
    """The relay, status consumer and pruner of one worker process."""

    def __init__(self, settings: Settings, store: OrderStore) -> None:
        name = f"order-service-{os.getpid()}"
        self._store = store
        self.relay = Relay(settings.broker, store, name, on_refused=_refused)
        self.status = ConsumeLoop(settings.broker, topology.ORDER_STATUS,
                                  StatusUnitOfWork(store).handle_batch, f"{name}-status",
                                  settings.consumer, store.is_transient, store.count_redelivery)
        self.pruner = Pruner(store, settings.retention)
        self._thread = threading.Thread(target=self._consume, name=f"{name}-status", daemon=True)

    def start(self) -> None:
        """Start checkpointing the WAL, publishing, consuming and pruning."""
        self._store.start_checkpoints()
        self.relay.start()
        self._thread.start()
        self.pruner.start()

    def _consume(self) -> None:
        try:
            self.status.run()
        except topology.QueueMismatch as exc:
            _refused(exc)

    def stop(self, timeout: float) -> None:
        """Finish the batch in hand, flush what the outbox can within `timeout`, disconnect."""
        self.status.stop()
        self.relay.stop(timeout=timeout)
        self._thread.join(timeout=max(1.0, timeout / 2))
        self.pruner.stop()
        self._store.stop_checkpoints()


def _refused(exc: topology.QueueMismatch) -> None:
    """The broker's queues changed shape under a running worker: stop the whole service.

    gunicorn's master halts when a worker exits with its boot-error status (3), so the service
    exits non-zero instead of forking worker after worker into the same refusal.
    """
    report_refusal("order-service", exc)
    os._exit(TOPOLOGY_REFUSED)
