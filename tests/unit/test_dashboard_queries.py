"""The PromQL tokenizer that finds the metric and label names the Grafana dashboard uses."""
from __future__ import annotations

import pytest

from tests.dashboard import parse, unknown_names


@pytest.mark.parametrize(("expr", "metrics", "labels"), [
    ("sum(rate(orders_placed_total[1m]))", {"orders_placed_total"}, set()),
    ("histogram_quantile(0.99, sum by (le) (rate(order_completion_seconds_bucket[5m])))",
     {"order_completion_seconds_bucket"}, {"le"}),
    ('max by (vhost, queue) (rabbitmq_queue_messages_ready{queue=~"order.*", vhost!="/"})',
     {"rabbitmq_queue_messages_ready"}, {"vhost", "queue"}),
    ('a_total offset 5m / on(job) group_left(reason) b{reason="x or y(z)"} > 1e3',
     {"a_total", "b"}, {"job", "reason"}),
    ("sum without (instance) (x) and ignoring (le) y unless z > bool w", {"x", "y", "z", "w"},
     {"instance", "le"}),
    ("rate(ns:metric:rate5m[1m]) * 2.5", {"ns:metric:rate5m"}, set()),
])
def test_metric_and_label_names(expr: str, metrics: set[str], labels: set[str]) -> None:
    assert parse(expr) == (metrics, labels)


@pytest.mark.parametrize("expr", ["sum(rat(x[1m]))", "histogram_quantil(0.5, x)"])
def test_an_unknown_function_is_refused(expr: str) -> None:
    with pytest.raises(ValueError, match="not a PromQL function"):
        parse(expr)


def test_unknown_names_reports_missing_metrics_and_labels() -> None:
    board = {"panels": [{"title": "P", "targets": [
        {"expr": "sum by (status) (rate(done_total[1m]))", "legendFormat": "{{status}} {{job}}"},
        {"expr": "max by (queue) (rabbitmq_queue_messages)", "legendFormat": "{{queue}}"}]}]}
    assert unknown_names(board, {"done_total": {"status"}}, exclude="rabbitmq_") == []
    assert unknown_names(board, {"done_total": {"reason"}}, exclude="rabbitmq_") == [
        "P: no label 'status' on ['done_total']"]
    assert unknown_names(board, {"don_total": {"status"}}, exclude="rabbitmq_") == [
        "P: no metric done_total"]
    assert unknown_names(board, {"rabbitmq_queue_messages": set()}, prefix="rabbitmq_") == [
        "P: no label 'queue' on ['rabbitmq_queue_messages']"]
