"""The cyclic garbage collector beside a collector's long-lived state.

With thousands of agents the collector holds millions of long-lived objects (job runs and
their trackers, running jobs' summaries, the streams' state). Each full collection of
CPython's cyclic GC scans every one of them with the GIL held: 0.1-0.7 s, about once every
few seconds while that state grows, during which no ack is written (bench/ack_lag.py
counts them). After each evaluation pass, :class:`GcFreezer` moves every object alive into
the GC's permanent generation (``gc.freeze``), which collections skip; frozen objects are
still freed by reference counting as usual. Only reference cycles among frozen objects that
have become garbage wait: once every ``thaw_every_s`` everything is unfrozen and collected
in one full pass, and what is alive then is frozen again.

Each report also makes a few dozen short-lived objects the GC tracks (windows, jobs,
futures). With CPython's default young-generation threshold (700 allocations) the GC ran
~23 young collections a second at 2,000 agents and promoted the reports still queued for
a transaction or a listener, so full collections followed every few seconds; with
``young_threshold`` (default 20,000) most of them are gone by the next collection and the
GC's share of the time halves (bench/ack_lag.py, ``+gcN``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)


class GcFreezer:
    """Call :meth:`after_pass` after each evaluation (from any one thread at a time)."""

    def __init__(
        self,
        thaw_every_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        young_threshold: int | None = YOUNG_THRESHOLD,
    ) -> None:
        self.thaw_every_s = thaw_every_s
        self.clock = clock
        self.young_threshold = young_threshold  # None: leave the GC's thresholds alone
        self.thaws = 0
        self._thawed = clock()

    def after_pass(self) -> None:
        if self.young_threshold is not None:
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(self.young_threshold, older, oldest)
        now = self.clock()
        if now - self._thawed >= self.thaw_every_s:
            gc.unfreeze()
            gc.collect()  # one full pause a period: the cycles that died while frozen
            self._thawed = now
            self.thaws += 1
        gc.freeze()
