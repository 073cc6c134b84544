"""Chaos scenarios report their figures at the end of the run (tests/figures.py)."""
from __future__ import annotations

import pytest

from tests import figures as report
from tests.chaos.harness import Figures, ResultProbe


@pytest.fixture
def figures(request, broker, vhost) -> Figures:
    """The scenario's figures, with a probe on its results from before any order is placed."""
    entry = Figures(scenario=request.node.name.removeprefix("test_"), probe=ResultProbe(broker, vhost))
    yield entry
    report.RESULTS["chaos"].append(entry)
