"""Process-level tuning."""
from __future__ import annotations

import gc

from messaging.service import freeze_startup_objects


def test_freezing_moves_what_exists_out_of_the_collectors_reach():
    survivors = [{"n": n} for n in range(1000)]
    try:
        before = gc.get_freeze_count()
        freeze_startup_objects()
        assert gc.get_freeze_count() >= before + len(survivors)
        tracked = gc.get_objects()
        assert not any(obj is survivors[0] for obj in tracked), "frozen: no collection walks it"
        later = [[]]
        assert any(obj is later for obj in gc.get_objects()), "new objects are still collected"
    finally:
        gc.unfreeze()
