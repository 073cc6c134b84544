"""Per-file mutation scores from mutmut's stored results (run `mutmut run` first; see docs/testing.md).

    python3 -m tools.mutation_scores               # a table: one line per mutated file
    python3 -m tools.mutation_scores --survivors   # and the mutants not killed nor known equivalent

A mutant counts as killed when a test failed on it or it timed out (it hung the tests: caught too).
Survivors listed as equivalent in docs/testing.md (lines "- `mutant name` ...") are shown apart: the
score is killed / total, the adjusted score killed / (total - equivalent).
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {"killed", "timeout", "caught by type check"}
LINE = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+?)\s*$")
LISTED = re.compile(r"^- `(?P<name>[^`]+__mutmut_\d+)`", re.MULTILINE)


def module_of(mutant: str) -> str:
    """`messaging.amqp.relay.xǁRelayǁ_pump__mutmut_3` -> `messaging/amqp/relay.py`."""
    module = re.split(r"\.x[ǁ_]", mutant, maxsplit=1)[0]
    return module.replace(".", "/") + ".py"


def equivalents(path: Path = Path("docs/testing.md")) -> set[str]:
    """Mutant names docs/testing.md lists as equivalent (no test can tell them from the original)."""
    return set(LISTED.findall(path.read_text())) if path.exists() else set()


def main(argv: list[str]) -> int:
    output = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True,
                            check=True).stdout
    listed = equivalents()
    statuses: dict[str, Counter] = defaultdict(Counter)
    unexplained: dict[str, list[str]] = defaultdict(list)
    for line in output.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        name, status = match["name"], match["status"]
        if status not in KILLED and name in listed:
            status = "equivalent"
        statuses[module_of(name)][status] += 1
        if status not in KILLED and status != "equivalent":
            unexplained[module_of(name)].append(f"{name} ({status})")
    print(f"{'file':34} {'killed':>6} {'total':>6} {'equiv':>6} {'score':>7} {'adjusted':>8}  not killed")
    sums = Counter()
    for path in sorted(statuses):
        counts = statuses[path]
        row = Counter(killed=sum(counts[s] for s in KILLED), total=sum(counts.values()),
                      equivalent=counts["equivalent"])
        sums.update(row)
        rest = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())
                         if s not in KILLED and s != "equivalent")
        print(line_for(path, row) + f"  {rest}")
        if "--survivors" in argv:
            for name in unexplained[path]:
                print(f"    {name}")
    if sums["total"]:
        print(line_for("all", sums))
    return 0


def line_for(label: str, row: Counter) -> str:
    killed, total, equivalent = row["killed"], row["total"], row["equivalent"]
    return (f"{label:34} {killed:6} {total:6} {equivalent:6} {100 * killed / total:6.1f}% "
            f"{100 * killed / (total - equivalent):7.1f}%")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
