"""The engine's reorder buffer: inputs held until the watermark passes their time, then
handed out in one fixed order (time, then kind, node or job id, GPU UUID, arrival)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

# one buffered input: (kind, node or job id, GPU UUID, arrival number, payload)
Item = tuple[int, str, str, int, Any]


class ReorderBuffer:
    """One list per time (window end, job start or end) and a heap of those times: most
    windows share their end with many others, so sorting a time's list once when it is
    handed out costs less than keeping every input in one heap."""

    __slots__ = ("_items", "_seq", "_times")

    def __init__(self) -> None:
        self._items: dict[float, list[Item]] = {}
        self._times: list[float] = []
        self._seq = 0

    def push(self, ts: float, kind: int, a: str, b: str, payload: Any) -> None:
        self._seq += 1
        items = self._items.get(ts)
        if items is None:
            self._items[ts] = [(kind, a, b, self._seq, payload)]
            heapq.heappush(self._times, ts)
        else:
            items.append((kind, a, b, self._seq, payload))

    def next_time(self) -> float | None:
        """The earliest buffered time; None: nothing buffered."""
        return self._times[0] if self._times else None

    def pop(self, watermark: float) -> tuple[float, list[Item]] | None:
        """The earliest time, if at most ``watermark``, with its inputs in order."""
        times = self._times
        if not times or times[0] > watermark:
            return None
        ts = heapq.heappop(times)
        items = self._items.pop(ts)
        items.sort()
        return ts, items

    def __iter__(self) -> Iterator[Item]:
        """Every buffered input, in no particular order."""
        for items in self._items.values():
            yield from items
