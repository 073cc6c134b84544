"""The chaos and cluster scenarios' figures, printed (and written as JSON) at the end of a run.

Scenarios record into RESULTS in whichever process runs them; under pytest-xdist each worker
hands its figures to the controller (tests/conftest.py), which prints them all.
"""
from __future__ import annotations

import json
import os

from tests.chaos.harness import Figures

RESULTS: dict[str, list[Figures]] = {"chaos": [], "cluster": []}


def as_json() -> dict[str, list[dict]]:
    """This process's figures, as JSON-ready values."""
    return {kind: [f.summary() for f in figures] for kind, figures in RESULTS.items()}


def add_json(figures: dict[str, list[dict]]) -> None:
    """Take in figures another process recorded (an xdist worker's)."""
    for kind, rows in figures.items():
        RESULTS[kind].extend(Figures(**row) for row in rows)


def report(terminalreporter) -> None:
    """Print each kind's section and write CHAOS_FIGURES / CLUSTER_FIGURES when set."""
    chaos, cluster = RESULTS["chaos"], RESULTS["cluster"]
    if chaos:
        terminalreporter.section("chaos figures")
        terminalreporter.write_line(f"{'scenario':58} {'accepted':>8} {'lost':>5} {'doubled':>7} "
                                    f"{'recovery s':>10}")
        for f in chaos:
            terminalreporter.write_line(f"{f.scenario:58} {f.accepted:>8} {f.lost:>5} "
                                        f"{f.duplicated:>7} {f.recovery_seconds:>10}")
    if cluster:
        terminalreporter.section("cluster figures")
        for f in cluster:
            terminalreporter.write_line(f"{f.scenario}: orders {f.accepted}, refused {f.refused}, "
                                        f"lost {f.lost}, doubled {f.duplicated}, settled in "
                                        f"{f.recovery_seconds} s after the stream stopped")
            for key, value in f.notes.items():
                terminalreporter.write_line(f"  {key}: {value}")
    for kind, figures in RESULTS.items():
        path = os.environ.get(f"{kind.upper()}_FIGURES")
        if path and figures:
            with open(path, "w") as out:
                json.dump([f.summary() for f in figures], out, indent=2)
