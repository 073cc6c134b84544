"""Reading a service's GET /metrics: the Prometheus text parsed into samples a test can ask about."""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """The samples of one scrape: `value("messages_consumed_total", queue="order-events")`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [(s.name, s.labels, s.value)
                        for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0.0 when none)."""
        return sum(value for sample, have, value in self.samples
                   if sample == name and all(have.get(k) == v for k, v in labels.items()))

    def names(self) -> set[str]:
        """Every sample name in the scrape."""
        return {name for name, _, _ in self.samples}

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """label value -> the sum of the samples called `name` with that label value."""
        found: dict[str, float] = {}
        for sample, have, value in self.samples:
            if sample == name and label in have:
                found[have[label]] = found.get(have[label], 0.0) + value
        return found


def scrape(base_url: str, timeout: float = 5.0) -> Samples:
    """GET `base_url`/metrics and parse it; fails unless it answers 200."""
    response = requests.get(f"{base_url}/metrics", timeout=timeout)
    response.raise_for_status()
    return Samples(response.text)
