"""The memory soak: post N orders at a sustainable rate and watch each service's RSS."""
from __future__ import annotations

import math

from bench.loadgen import closed_loop, open_loop
from bench.runner import Run


class SoakRun(Run):
    """A run that only soaks (no baselines), then verifies every order like the full run."""

    def soak(self) -> None:
        """Post `--soak` orders at `--soak-rate` in ten chunks, sampling RSS and WAL sizes after each."""
        total, rate = self.o.soak, self.o.soak_rate
        chunk, posted = math.ceil(total / 10), 0
        series = [{"orders": 0, "rss": self.rss()}]
        if rate is None:
            with self.phase("soak_probe"):
                rate = self._sustainable_rate()
        with self.phase("soak"):
            while posted < total:
                count = min(chunk, total - posted)
                row = self.load(open_loop, self.env.stack.order_url, rate, count / rate,
                                f"soak {posted + count}/{total}", self.o.connections)
                posted += count
                series.append({"orders": posted, "rss": self.rss(), "disk": self.disk(), "post": row})
            settle = self.api.wait_settled(self.o.settle_timeout)
            series.append({"orders": posted, "rss": self.rss(), "disk": self.disk(),
                           "settled_after_s": round(settle, 3)})
        self.results["soak"] = {"orders": total, "rate": rate, "series": series}
        with self.phase("verify"):
            self.verify()

    def _sustainable_rate(self) -> float:
        """60% of what 5 s of closed-loop posting achieves, in steps of 50/s."""
        probe = self.load(closed_loop, self.env.stack.order_url, self.o.concurrency, "soak probe",
                          duration=5.0)
        self.api.wait_settled(self.o.settle_timeout)
        self.results["soak_probe"] = probe
        return max(50.0, math.floor(0.6 * probe["achieved_rps"] / 50) * 50)
