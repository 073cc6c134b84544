"""Chaos scenarios report their figures at the end of the run."""
from __future__ import annotations

import json
import os

import pytest

from tests.chaos.harness import Figures, ResultProbe

RESULTS: list[Figures] = []


@pytest.fixture
def figures(request, broker, vhost) -> Figures:
    """The scenario's figures, with a probe on its results from before any order is placed."""
    entry = Figures(scenario=request.node.name.removeprefix("test_"), probe=ResultProbe(broker, vhost))
    yield entry
    RESULTS.append(entry)


def pytest_terminal_summary(terminalreporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("chaos figures")
    terminalreporter.write_line(f"{'scenario':58} {'accepted':>8} {'lost':>5} {'doubled':>7} "
                                f"{'recovery s':>10}")
    for f in RESULTS:
        terminalreporter.write_line(f"{f.scenario:58} {f.accepted:>8} {f.lost:>5} {f.duplicated:>7} "
                                    f"{f.recovery_seconds:>10}")
    path = os.environ.get("CHAOS_FIGURES")
    if path:
        with open(path, "w") as out:
            json.dump([f.summary() for f in RESULTS], out, indent=2)
