"""Memory (RSS) and CPU time of a process and its children: psutil when installed, else /proc."""
from __future__ import annotations

import os
from pathlib import Path

try:
    import psutil
except ImportError:  # the /proc fallback below covers Linux
    psutil = None

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")
GONE = (OSError, ValueError) if psutil is None else (OSError, ValueError, psutil.Error)


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """/proc/<pid>/stat (or one thread's, /proc/<pid>/task/<tid>/stat) from its third field,
    `state`, on: utime and stime are [11] and [12], in clock ticks."""
    path = PROC / str(pid) / "stat" if tid is None else PROC / str(pid) / "task" / str(tid) / "stat"
    text = path.read_text()
    return text[text.rindex(")") + 2:].split()  # comm may hold spaces and parentheses


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            return [pid] + [child.pid for child in root.children(recursive=True)]
        except psutil.Error:
            return []
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
    if pid not in parents:
        return []
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found.extend(frontier)
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` plus its children (gunicorn: the master and its workers)."""
    total = 0
    for member in tree(pid):
        try:
            if psutil is not None:
                total += psutil.Process(member).memory_info().rss
                continue
            for line in (PROC / str(member) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except GONE:  # the process exited meanwhile
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by `pid` and its living children."""
    total = 0.0
    for member in tree(pid):
        try:
            if psutil is not None:
                times = psutil.Process(member).cpu_times()
                total += times.user + times.system
            else:
                fields = stat_fields(member)
                total += (int(fields[11]) + int(fields[12])) / TICKS
        except GONE:  # the process exited meanwhile
            continue
    return total


def find_process(name: str) -> int | None:
    """The oldest process whose command name is `name` (e.g. RabbitMQ's beam.smp), if any."""
    candidates = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == name:
                candidates.append((int(stat_fields(int(entry.name))[19]), int(entry.name)))
        except (OSError, ValueError, IndexError):
            continue
    return min(candidates)[1] if candidates else None


def listening_process(port: int) -> int | None:
    """The process that listens on TCP `port` (e.g. the broker's 5672), read from /proc; None when
    none is found or its file descriptors cannot be read."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for entry in PROC.iterdir() if inodes else ():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


class CpuMeter:
    """CPU seconds of named process trees between two snapshots."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids

    def snapshot(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items() if pid}
        sample["bench"] = sum(os.times()[:2])
        return sample

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
        """Cores used by each tree over `wall` seconds (1.0 = one core busy all the time)."""
        return {name: round((after[name] - before.get(name, 0.0)) / wall, 3)
                for name in after if wall > 0}
