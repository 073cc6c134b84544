"""NotificationService's own metric (notifications sent) beside the shared ones; the name is part
of the metrics contract (docs/operations.md, "Metrics")."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from messaging.observability import metrics


class NotificationMetrics:
    """notifications_sent."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.sent = Counter("notifications_sent", "Notifications sent", registry=registry)


def configure(enabled: bool, multiprocess: bool = False,
              registry: CollectorRegistry | None = None) -> metrics.Metrics | None:
    """Make NotificationService's metrics: the shared ones and the notifications'."""
    return metrics.configure(enabled, own=NotificationMetrics, multiprocess=multiprocess,
                             registry=registry)


def notifications_sent(count: int) -> None:
    own: NotificationMetrics | None = metrics.own()
    if own and count:
        own.sent.inc(count)
