"""InventoryService's own metric (stock_available{item}, read from the stock table when scraped)
beside the shared ones; the name is part of the metrics contract (docs/operations.md, "Metrics")."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from messaging.observability import exposition, metrics


class StockCollector(exposition.StoreGauges):
    """stock_available{item}, read from InventoryService's stock table."""

    what = "stock"

    def read(self) -> list[dict[str, Any]]:
        return self._store.stock_levels()

    def families(self, answer: list[dict[str, Any]]) -> Iterator[Metric]:
        family = GaugeMetricFamily("stock_available", "Units of each menu item on hand",
                                   labels=["item"])
        for level in answer:
            family.add_metric([level["item"]], level["available"])
        yield family


def configure(enabled: bool, multiprocess: bool = False,
              registry: CollectorRegistry | None = None) -> metrics.Metrics | None:
    """Make InventoryService's metrics: the shared ones and the outbox's (the stock is watched
    once the store is open: `watch_stock`)."""
    return metrics.configure(enabled, outbox=True, multiprocess=multiprocess, registry=registry)


def watch_stock(store: Any) -> None:
    """Report the stock of `store` at every scrape."""
    exposition.watch(StockCollector(store))
