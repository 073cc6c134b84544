"""bench.micro runs its measurements end to end on small counts (no broker)."""
from __future__ import annotations

import re

from bench import micro


def _number(pattern: str, line: str) -> float:
    match = re.search(pattern, line)
    assert match, line
    return float(match.group(1))


def test_commit_latency_reports_percentiles_for_both_checkpoint_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    for background in (False, True):
        line = micro.commit_latency(background, count=200)
        assert "200 OrderStore.add" in line
        assert 0 < _number(r"p50 ([\d.]+)", line) <= _number(r"max ([\d.]+)", line)


def test_inventory_handler_reports_cpu_per_message(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert _number(r"([\d.]+) us CPU/message", micro.inventory_handler(batches=2, size=5)) > 0


def test_a_frozen_heap_leaves_the_full_collection_less_to_walk(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    walked = {freeze: _number(r"walks (\d+) objects", micro.gc_pauses(freeze, requests=20))
              for freeze in (False, True)}
    assert walked[True] * 10 < walked[False]
