"""The engine's reorder buffer: inputs held until the watermark passes their time, then
handed out in one fixed order: at each time the windows (by node, GPU UUID, arrival), then
the other inputs (by kind, job id, arrival)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from gpuwarden.collector.runs import Observation

# one buffered input other than a window: (kind, job id or "", "", arrival number, payload)
Item = tuple[int, str, str, int, Any]

# the order of one time's windows: node, then GPU UUID (a stable sort keeps arrival order)
_node_uuid = itemgetter(0, 1)


class ReorderBuffer:
    """Per time (window end, job start or end) the windows in one list and the other inputs
    in another, and a heap of those times: most windows share their end with many others,
    so sorting a time's list once when it is handed out costs less than keeping every input
    in one heap. Windows are kept as they came (no tuple around each): they are the bulk."""

    __slots__ = ("_others", "_seq", "_times", "_windows")

    def __init__(self) -> None:
        self._windows: dict[float, list[Observation]] = {}
        self._others: dict[float, list[Item]] = {}
        self._times: list[float] = []
        self._seq = 0

    def _new_time(self, ts: float) -> None:
        if ts not in self._windows and ts not in self._others:
            heapq.heappush(self._times, ts)

    def push_window(self, o: Observation) -> None:
        """One window, at its end."""
        ts = o.end
        windows = self._windows.get(ts)
        if windows is None:
            self._new_time(ts)
            self._windows[ts] = [o]
        else:
            windows.append(o)

    def push_windows_at(self, ts: float, batch: list[Observation]) -> None:
        """Windows that all end at ``ts``, in arrival order; the buffer keeps ``batch``
        itself when it has nothing else at that time (the caller must not reuse it)."""
        if not batch:
            return
        windows = self._windows.get(ts)
        if windows is None:
            self._new_time(ts)
            self._windows[ts] = batch
        else:
            windows.extend(batch)

    def push(self, ts: float, kind: int, a: str, b: str, payload: Any) -> None:
        """An input other than a window (a job start or end)."""
        self._seq += 1
        items = self._others.get(ts)
        if items is None:
            self._new_time(ts)
            self._others[ts] = [(kind, a, b, self._seq, payload)]
        else:
            items.append((kind, a, b, self._seq, payload))

    def next_time(self) -> float | None:
        """The earliest buffered time; None: nothing buffered."""
        return self._times[0] if self._times else None

    def pop(self, watermark: float) -> tuple[float, list[Observation], list[Item]] | None:
        """The earliest time, if at most ``watermark``, with its windows and its other
        inputs, each in order."""
        times = self._times
        if not times or times[0] > watermark:
            return None
        ts = heapq.heappop(times)
        windows = self._windows.pop(ts, None)
        if windows is None:
            windows = []
        elif len(windows) > 1:
            windows.sort(key=_node_uuid)
        others = self._others.pop(ts, None)
        if others is None:
            others = []
        else:
            others.sort()
        return ts, windows, others

    def windows(self) -> Iterator[Observation]:
        """Every buffered window, in no particular order."""
        for windows in self._windows.values():
            yield from windows
