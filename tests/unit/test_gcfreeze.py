"""GcFreezer: what is alive after an evaluation pass is left out of the cyclic GC's
collections, and reference cycles that die meanwhile are freed at the next thaw."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden.collector.enforce import attach_enforcement
from gpuwarden.collector.gcfreeze import GcFreezer
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.server import Collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # leave the test process as it was
    gc.set_threshold(*thresholds)


def test_a_pass_sets_the_young_threshold_and_leaves_the_older_ones() -> None:
    gc.set_threshold(700, 10, 10)
    GcFreezer(young_threshold=20_000).after_pass()
    assert gc.get_threshold() == (20_000, 10, 10)
    gc.set_threshold(700, 10, 10)
    GcFreezer(young_threshold=None).after_pass()
    assert gc.get_threshold() == (700, 10, 10)


def test_a_cycle_frozen_by_a_pass_outlives_collections_and_is_freed_at_the_thaw() -> None:
    now = [0.0]
    freezer = GcFreezer(thaw_every_s=3600.0, clock=lambda: now[0])
    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic GC frees it
    gone = weakref.ref(a)
    freezer.after_pass()
    del a, b
    gc.collect()
    assert gone() is not None  # frozen: full collections skip it
    now[0] = 1800.0
    freezer.after_pass()
    assert gone() is not None and freezer.thaws == 0
    now[0] = 3600.0
    freezer.after_pass()
    assert gone() is None and freezer.thaws == 1


def test_frozen_objects_without_cycles_are_freed_as_soon_as_unreferenced() -> None:
    freezer = GcFreezer(clock=lambda: 0.0)
    kept = Node()
    gone = weakref.ref(kept)
    freezer.after_pass()
    del kept
    assert gone() is None  # reference counting works on frozen objects as ever


async def test_the_daemon_freezes_what_start_up_built_before_agents_connect(
    tmp_path: Path,
) -> None:
    """The first full collections come while thousands of agents connect at once: what the
    collector built at start (imports, state, warm-up) is out of them by then."""
    gc.unfreeze()
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0")
    await c.start()
    try:
        attach_enforcement(
            c,
            policies=PolicySet(),
            executor=None,
            audit_jsonl=None,
            evaluate_interval_s=3600.0,  # no evaluation pass in this test
            gc_freezer=GcFreezer(),
        )
        for _ in range(200):
            if gc.get_freeze_count():
                break
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 10_000
    finally:
        await c.stop()
