"""A sink's bounded on-disk backlog: batches a sink could not take, oldest first.

One file per batch (a serialized ``HistoryResponse`` of ``WindowRecord`` messages), named
``<seq>-<windows>.pb`` so that the bound is kept and drops are counted without reading
files. A file is written under a temporary name, synced and renamed, so a crash never
leaves half a batch. Beyond ``max_windows`` or ``max_bytes`` the oldest batches are
deleted; their windows are counted in :attr:`Backlog.dropped` and logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.common.convert import window_record_from_pb, window_record_to_pb
from gpuwarden.common.types import WindowRecord
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{16})-(\d+)\.pb")


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    windows: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.seq:016d}-{self.windows}.pb"


class Backlog:
    def __init__(self, directory: Path, *, max_windows: int, max_bytes: int) -> None:
        self.dir = directory
        self.max_windows = max_windows
        self.max_bytes = max_bytes
        self.dropped = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._entries: deque[_Entry] = deque()
        self.windows = 0  # waiting in the backlog
        self.bytes = 0
        for path in sorted(self.dir.iterdir()):
            m = _NAME.fullmatch(path.name)
            if m is None:
                if path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)  # a write cut off by a crash
                continue
            self._add(_Entry(int(m[1]), int(m[2]), path.stat().st_size))
        self._next = self._entries[-1].seq + 1 if self._entries else 1
        if self._entries:
            log.info("%s: %d windows waiting from before the restart", self.dir, self.windows)

    def _add(self, entry: _Entry) -> None:
        self._entries.append(entry)
        self.windows += entry.windows
        self.bytes += entry.size

    def _pop(self) -> _Entry:
        entry = self._entries.popleft()
        self.windows -= entry.windows
        self.bytes -= entry.size
        with contextlib.suppress(FileNotFoundError):
            (self.dir / entry.name).unlink()
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, records: Sequence[WindowRecord]) -> None:
        """Keep ``records`` as the newest batch; drop the oldest batches beyond the bound."""
        if not records:
            return
        data = pb.HistoryResponse(windows=[window_record_to_pb(r) for r in records])
        blob = data.SerializeToString()
        entry = _Entry(self._next, len(records), len(blob))
        self._next += 1
        tmp = self.dir / (entry.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(self.dir / entry.name)
        self._add(entry)
        self._trim()

    def _trim(self) -> None:
        lost = 0
        while len(self._entries) > 1 and (
            self.windows > self.max_windows or self.bytes > self.max_bytes
        ):
            lost += self._pop().windows
        if lost:
            self.dropped += lost
            log.warning(
                "%s: backlog over its bound (%d windows, %d bytes): dropped the %d oldest "
                "windows (%d dropped in all)",
                self.dir,
                self.max_windows,
                self.max_bytes,
                lost,
                self.dropped,
            )

    def oldest(self) -> tuple[int, list[WindowRecord]] | None:
        """The oldest batch and its key, or None when empty. An unreadable file is dropped
        (counted) and the next one returned."""
        while self._entries:
            entry = self._entries[0]
            try:
                msg = pb.HistoryResponse.FromString((self.dir / entry.name).read_bytes())
                return entry.seq, [window_record_from_pb(w) for w in msg.windows]
            except Exception as exc:  # unreadable or corrupt: it can never be delivered
                log.error("%s/%s: unreadable (%s); dropping it", self.dir, entry.name, exc)
                self.dropped += self._pop().windows
        return None

    def remove(self, seq: int) -> None:
        """Forget the batch ``seq`` (delivered)."""
        if self._entries and self._entries[0].seq == seq:
            self._pop()
