"""The Grafana dashboard of the monitoring profile, and the metric and label names its PromQL uses.

A small tokenizer, enough for the queries a dashboard holds: string literals, label matchers,
`by`/`without`/`on`/`ignoring`/`group_*` clauses and range or offset durations are taken out,
then every identifier followed by `(` must be a PromQL function or aggregation, and every other
one that is not a keyword is a metric name (as written: `x_bucket` stays `x_bucket`, the sample
name a scrape shows).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "compose" / "grafana" / "dashboards" / "overview.json"

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
FUNCTIONS = AGGREGATIONS | {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor",
    "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile",
    "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta",
    "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month",
    "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
    "stdvar_over_time", "last_over_time", "present_over_time", "acos", "acosh", "asin", "asinh",
    "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "pi", "rad"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "atan2", "inf", "nan"}
# Labels Prometheus itself gives every scraped sample: no exporter needs to serve them.
TARGET_LABELS = {"job", "instance"}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{([^{}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
DURATION = re.compile(r"\[[^\]]*\]")
IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


@dataclass(frozen=True)
class Query:
    """One target of one panel: its expression, and the names in it."""

    panel: str
    expr: str
    metrics: frozenset[str]
    labels: frozenset[str]  # in matchers, grouping clauses and the legend


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses; ValueError on an unknown function."""
    text = STRING.sub('""', expr)
    labels: set[str] = set()
    for inner in MATCHERS.findall(text):
        labels.update(MATCHER_LABEL.findall(inner))
    text = MATCHERS.sub(" ", text)
    for inner in GROUPING.findall(text):
        labels.update(name.strip() for name in inner.split(",") if name.strip())
    text = DURATION.sub(" ", GROUPING.sub(" ", text))
    metrics = set()
    for match in IDENTIFIER.finditer(text):
        name, rest = match.group(), text[match.end():].lstrip()
        if rest.startswith("("):
            if name not in FUNCTIONS:
                raise ValueError(f"not a PromQL function: {name}( in {expr!r}")
        elif name not in KEYWORDS:
            metrics.add(name)
    return metrics, labels


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


def queries(dashboard: dict[str, Any]) -> list[Query]:
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            metrics, labels = parse(target["expr"])
            labels |= set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
            found.append(Query(panel["title"], target["expr"], frozenset(metrics),
                               frozenset(labels)))
    return found


def metric_names(dashboard: dict[str, Any]) -> set[str]:
    """Every metric name the dashboard's queries use."""
    return {name for query in queries(dashboard) for name in query.metrics}


def unknown_names(dashboard: dict[str, Any], scraped: dict[str, set[str]],
                  prefix: str = "", exclude: str | None = None) -> list[str]:
    """What the queries use that `scraped` (sample name -> its label names) lacks: metric names
    (those starting with `prefix`, not with `exclude`), and labels none of a query's metrics has."""
    problems = []
    for query in queries(dashboard):
        mine = {name for name in query.metrics if name.startswith(prefix)
                and not (exclude and name.startswith(exclude))}
        if not mine:
            continue
        problems += [f"{query.panel}: no metric {name}" for name in sorted(mine - set(scraped))]
        present = set().union(*(scraped.get(name, set()) for name in query.metrics))
        if not mine - set(scraped):
            problems += [f"{query.panel}: no label {label!r} on {sorted(query.metrics)}"
                         for label in sorted(query.labels - present - TARGET_LABELS)]
    return problems
