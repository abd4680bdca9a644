"""Roll-up sums of stored windows not yet written to the ``rollups`` table.

Adding each window to its two roll-up rows in SQL (an upsert per window and resolution)
was a tenth of the collector's ingest CPU. Instead, a committed report's windows are added
here, per node, to their 1-minute buckets (the hour buckets are derived when written), and
a node's sums are written (added to the stored rows) about once a minute, a few nodes per
transaction, by :meth:`Store.write_reports` or before a roll-up read.

Crash safety: reports get increasing ids, never reused. The transaction that writes a
node's sums also records, in ``rollup_marks``, the id of that node's newest report they
include, and in ``meta`` the id up to which every report is in the table (``safe``: just
below the oldest report still pending anywhere). After a crash the store adds again, from
the stored reports, exactly those with an id above ``safe`` and above their node's mark:
nothing is counted twice (what was written is at or below a mark) and nothing is lost (a
raw report is not pruned before its sums are written).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from gpuwarden.collector.rollup import bucket_of
from gpuwarden.common.types import GpuWindow

Acc = list[Any]  # the columns of a ``rollups`` row after (res, bucket, node, uuid, job_id)

FLUSH_AFTER_S = 60.0  # a node's sums wait at most this long (while reports keep coming)
MAX_PENDING = 100_000  # buckets held in memory (~40 MB); beyond, the largest nodes go first

# Positions in an accumulator.
_INDEX, _NAME, _USER, _ACCOUNT, _PARTITION = range(5)
_WINDOWS, _SAMPLES, _FIRST, _LAST, _USUM, _UN, _UMAX, _UMIN = range(5, 13)
_MEM, _MEMTOT, _PSUM, _PN, _TEMP, _ALLOC = range(13, 19)
_MAXES = (_UMAX, _MEM, _MEMTOT, _TEMP)


def _merge(acc: Acc, other: Acc) -> None:
    """Add ``other``'s sums to ``acc``; its identity fields (index, name, job's user...)
    win, as the newer ones. A missing (None) extreme loses to a known one."""
    acc[_INDEX:_WINDOWS] = other[_INDEX:_WINDOWS]
    for i in (_WINDOWS, _SAMPLES, _USUM, _UN, _PSUM, _PN, _ALLOC):
        acc[i] += other[i]
    acc[_FIRST] = min(acc[_FIRST], other[_FIRST])
    acc[_LAST] = max(acc[_LAST], other[_LAST])
    for i in _MAXES:
        if other[i] is not None and (acc[i] is None or other[i] > acc[i]):
            acc[i] = other[i]
    if other[_UMIN] is not None and (acc[_UMIN] is None or other[_UMIN] < acc[_UMIN]):
        acc[_UMIN] = other[_UMIN]


def _window(ws: float, we: float, g: GpuWindow) -> Acc:
    weight = g.samples if g.samples > 0 else 1
    job = g.job
    return [
        g.index,
        g.name,
        job.user if job else "",
        job.account if job else "",
        job.partition if job else "",
        1,
        g.samples,
        ws,
        we,
        g.util_mean * weight if g.util_mean is not None else 0.0,
        weight if g.util_mean is not None else 0,
        g.util_max,
        g.util_min,
        g.mem_used_max_bytes,
        g.mem_total_bytes,
        g.power_mean_w * weight if g.power_mean_w is not None else 0.0,
        weight if g.power_mean_w is not None else 0,
        g.temperature_c,
        int(g.allocated),
    ]


class _Node:
    __slots__ = ("buckets", "first_id", "last_id", "since")

    def __init__(self, report_id: int, now: float) -> None:
        self.buckets: dict[tuple[str, str, int], Acc] = {}
        self.first_id = report_id
        self.last_id = report_id
        self.since = now


class Pending:
    """Per node, the 1-minute sums of its committed windows not yet written."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        self._size = 0
        self._last_id = 0

    def __len__(self) -> int:
        return self._size

    def add(
        self, report_id: int, node: str, ws: float, we: float, gpus: Sequence[GpuWindow]
    ) -> None:
        """A committed report's windows (``report_id`` above every id added before)."""
        if not gpus:
            self.note_id(report_id)
            return
        entry = self._nodes.get(node)
        if entry is None:
            entry = self._nodes[node] = _Node(report_id, time.monotonic())
        entry.last_id = report_id
        self._last_id = max(self._last_id, report_id)
        bucket = bucket_of(ws, we, 60)
        buckets = entry.buckets
        for g in gpus:
            key = (g.uuid, g.job.job_id if g.job else "", bucket)
            acc = buckets.get(key)
            if acc is None:
                buckets[key] = _window(ws, we, g)
                self._size += 1
            else:
                _merge(acc, _window(ws, we, g))

    def note_id(self, report_id: int) -> None:
        """A report stored without windows to add (none, or roll-ups off)."""
        self._last_id = max(self._last_id, report_id)

    def due(self, max_rows: int) -> list[str]:
        """Nodes to write now, at most about ``max_rows`` rows: those waiting longest past
        :data:`FLUSH_AFTER_S`, or the largest while too much is held."""
        if self._size > MAX_PENDING:
            order = iter(sorted(self._nodes, key=lambda n: -len(self._nodes[n].buckets)))
            oldest_first = False
        else:  # a node's entry is made when its first sums come: oldest first already
            order = iter(self._nodes)
            oldest_first = True
        now = time.monotonic()
        out: list[str] = []
        rows = 0
        for node in order:
            entry = self._nodes[node]
            if oldest_first and now - entry.since < FLUSH_AFTER_S:
                break
            if out and rows + 2 * len(entry.buckets) > max_rows:
                break
            out.append(node)
            rows += 2 * len(entry.buckets)
        return out

    def matching(self, node: str, uuid: str, job_id: str) -> list[str]:
        """Nodes holding sums a roll-up read with these filters would include."""
        out = []
        for name, entry in self._nodes.items():
            if node and name != node:
                continue
            if (uuid or job_id) and not any(
                (not uuid or u == uuid) and (not job_id or j == job_id) for u, j, _ in entry.buckets
            ):
                continue
            out.append(name)
        return out

    def rows(self, nodes: Iterable[str]) -> list[tuple[object, ...]]:
        """The ``rollups`` rows (both resolutions) of ``nodes``' sums, to add."""
        out: list[tuple[object, ...]] = []
        for node in nodes:
            hours: dict[tuple[str, str, int], Acc] = {}
            for (uuid, job_id, bucket), acc in self._nodes[node].buckets.items():
                out.append((60, bucket, node, uuid, job_id, *acc))
                hkey = (uuid, job_id, bucket - bucket % 3600)
                h = hours.get(hkey)
                if h is None:
                    hours[hkey] = list(acc)
                else:
                    _merge(h, acc)
            out += [(3600, b, node, u, j, *acc) for (u, j, b), acc in hours.items()]
        return out

    def holds(self, node: str, report_id: int) -> bool:
        """Whether report ``report_id`` of ``node`` has sums not yet written."""
        entry = self._nodes.get(node)
        return entry is not None and report_id >= entry.first_id

    def marks(self, nodes: Iterable[str]) -> list[tuple[str, int]]:
        return [(n, self._nodes[n].last_id) for n in nodes]

    def safe_after(self, nodes: Iterable[str]) -> int:
        """The id at and below which every report is written once ``nodes`` are."""
        gone = set(nodes)
        for node, entry in self._nodes.items():  # made in the order of their first ids
            if node not in gone:
                return entry.first_id - 1
        return self._last_id

    def drop(self, nodes: Iterable[str]) -> None:
        """``nodes``' sums are written (their transaction committed)."""
        for node in nodes:
            entry = self._nodes.pop(node, None)
            if entry is not None:
                self._size -= len(entry.buckets)
