"""The open-loop timetable: request i is due at i / rate seconds, whatever happened before it."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Timetable:
    """A fixed schedule of `rate` requests per second for `duration` seconds."""

    rate: float
    duration: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError("rate and duration must be positive")

    @property
    def count(self) -> int:
        """How many requests the timetable holds."""
        return max(1, round(self.rate * self.duration))

    def at(self, index: int) -> float:
        """Seconds from the start at which request `index` is due."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        return index / self.rate

    def due_by(self, elapsed: float) -> int:
        """How many requests are due `elapsed` seconds after the start."""
        if elapsed < 0:
            return 0
        return min(self.count, math.floor(elapsed * self.rate + 1e-9) + 1)


def parse_rates(text: str) -> list[int]:
    """Parse '100,200,400' into ascending offered rates."""
    try:
        rates = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"rates must be whole numbers separated by commas, got {text!r}") from None
    if not rates or rates[0] <= 0:
        raise ValueError(f"rates must be positive, got {text!r}")
    return rates
