"""GcFreezer: what is alive after an evaluation pass is left out of the cyclic GC's
collections, and reference cycles that die meanwhile are freed at the next thaw."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gpuwarden.collector.gcfreeze import GcFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


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
