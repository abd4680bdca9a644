"""Bounded on-disk spool of reports not yet acknowledged by the collector.

Each report is one file ``<seq>.pb``, written atomically (temp file, fsync, rename) before
it is sent and deleted when the collector acks it: an 8-byte header (``GWS1`` and the CRC-32
of the report, big-endian) and the serialized ``NodeReport``. After a restart or reconnect
the agent replays what is left, in sequence order; the collector de-duplicates by
(node, seq). Sequence numbers rise strictly across restarts: the counter's file ``seq`` in
the same folder holds a reservation, rewritten once per ``SEQ_BLOCK`` reports, so a report
costs one fsynced write (its own).
When the spool is full the oldest reports are dropped and counted.
The sampling thread puts reports and the streaming thread acks them: one lock guards the
spool's bookkeeping.
A report the collector rejected as invalid is moved to ``rejected/`` for inspection; a file
that cannot be read back (truncated, garbled, empty: a damaged disk or a hand) is moved to
``corrupt/`` and counted, so that it never blocks the reports behind it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

_SUFFIX = ".pb"
_MAGIC = b"GWS1"
_HEADER = struct.Struct(">4sI")  # magic, CRC-32 of the payload


SEQ_BLOCK = 1 << 20  # sequence numbers reserved per write of ``seq`` (~60 days at 5 s)


def _seqs_in(folder: Path) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for p in folder.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(ValueError):
                out.append(int(p.stem))
    return out


class SpoolError(RuntimeError):
    pass


class SpoolCorrupt(SpoolError):
    """A spooled report cannot be read back as it was written."""


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, zlib.crc32(payload)) + payload


def unframe(data: bytes) -> bytes:
    """The payload of a spool file; SpoolCorrupt saying what is wrong otherwise."""
    if len(data) < _HEADER.size:
        raise SpoolCorrupt(f"{len(data)} bytes, shorter than the spool header")
    magic, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise SpoolCorrupt(f"no spool header (starts with {data[:4]!r})")
    payload = data[_HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise SpoolCorrupt("checksum mismatch (truncated or altered)")
    return payload


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        tmp.unlink(missing_ok=True)  # a half-written file must not hold the space
        raise
    tmp.replace(path)


class Spool:
    def __init__(self, directory: Path, *, max_reports: int = 17280, max_bytes: int = 256 << 20):
        if max_reports < 1 or max_bytes < 1:
            raise ValueError("spool limits must be positive")
        self.directory = directory
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.dropped = 0
        self.corrupt = 0
        self.disk_error: str | None = None  # why the last write failed, until one succeeds
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "rejected").mkdir(exist_ok=True)
            (directory / "corrupt").mkdir(exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {directory}: {exc}") from exc
        self._lock = threading.RLock()
        self._sizes: dict[int, int] = {}
        for p in directory.glob(f"*{_SUFFIX}"):
            try:
                self._sizes[int(p.stem)] = p.stat().st_size
            except (ValueError, OSError):
                log.warning("ignoring unexpected file in spool: %s", p)
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # an interrupted write: never acknowledged, never sent
        self._bytes = sum(self._sizes.values())
        self._next_seq = self._load_seq()
        self._reserved = self._next_seq  # nothing reserved yet: the first number writes ``seq``

    # -- sequence numbers -------------------------------------------------------------
    def _load_seq(self) -> int:
        """Where numbering starts: above every sequence this spool can have handed out.

        Those are bounded by the reservation in ``seq`` (the counter reserves blocks of
        ``SEQ_BLOCK`` numbers ahead, one small write per block, not one per report), by the
        files still spooled, set aside or rejected, and by the time-based start, which alone
        covers a lost ``seq`` file: the counter rises by one per report, the clock by a
        million per second.
        """
        stored = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            stored = int((self.directory / "seq").read_text().strip())
        kept = [*self._sizes, *_seqs_in(self.directory / "rejected")]
        kept += _seqs_in(self.directory / "corrupt")
        return max(stored, max(kept, default=0) + 1, time.time_ns() // 1000)

    def next_seq(self) -> int:
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            if seq >= self._reserved:
                reserve = seq + SEQ_BLOCK
                try:
                    _write_atomic(self.directory / "seq", str(reserve).encode())
                    self._reserved = reserve
                except OSError as exc:
                    # Tried again with the next number. After a restart the spooled reports' own
                    # numbers and the time-based start keep seq increasing.
                    self._disk_trouble(exc)
            return seq

    # -- reports ---------------------------------------------------------------------
    def put(self, seq: int, data: bytes) -> bool:
        """Keep a report until it is acked. On a full disk the oldest reports make room
        (dropped, counted); returns False when even that left no room for this one."""
        with self._lock:
            path = self.directory / f"{seq:020d}{_SUFFIX}"
            framed = frame(data)
            evicted = False
            while True:
                try:
                    _write_atomic(path, framed)
                    break
                except OSError as exc:
                    evicted = True
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._sizes:
                        self._disk_trouble(exc)
                        self.dropped += 1
                        return False
                    self._disk_trouble(exc)
                    self._remove(min(self._sizes))
                    self.dropped += 1
            if self.disk_error is not None and not evicted:  # room without making any
                log.warning("spool %s is writable again", self.directory)
                self.disk_error = None
            self._sizes[seq] = len(framed)
            self._bytes += len(framed)
            while len(self._sizes) > self.max_reports or self._bytes > self.max_bytes:
                oldest = min(self._sizes)
                if oldest == seq:
                    break
                self._remove(oldest)
                self.dropped += 1
                log.warning("spool full: dropped unacknowledged report seq=%d", oldest)
            return True

    def _disk_trouble(self, exc: OSError) -> None:
        """One clear line per episode, naming the path, however many writes fail."""
        if self.disk_error is None:
            log.error(
                "cannot write to spool %s (%s): dropping the oldest unacknowledged reports "
                "to keep the newest; sampling goes on",
                self.directory,
                exc.strerror or exc,
            )
        self.disk_error = str(exc)

    def _remove(self, seq: int) -> None:
        size = self._sizes.pop(seq, None)
        if size is None:
            return
        self._bytes -= size
        (self.directory / f"{seq:020d}{_SUFFIX}").unlink(missing_ok=True)

    def ack(self, seq: int) -> None:
        with self._lock:
            self._remove(seq)

    def reject(self, seq: int) -> bool:
        """Move a report the collector refused to ``rejected/``, as a plain serialized
        ``NodeReport`` (header removed) for inspection; False when it is not spooled."""
        with self._lock:
            if seq not in self._sizes:
                return False
            path = self.directory / f"{seq:020d}{_SUFFIX}"
            with contextlib.suppress(OSError, SpoolCorrupt):
                _write_atomic(path, unframe(path.read_bytes()))
            return self._move_aside(seq, "rejected")

    def set_aside(self, seq: int, reason: str) -> None:
        """Move a report that cannot be read back to ``corrupt/``, count it and say so."""
        with self._lock:
            if self._move_aside(seq, "corrupt"):
                self.corrupt += 1
                log.error(
                    "spool: report seq=%d cannot be read (%s); moved to %s, delivery continues",
                    seq,
                    reason,
                    self.directory / "corrupt",
                )

    def _move_aside(self, seq: int, folder: str) -> bool:
        if seq not in self._sizes:
            return False
        name = f"{seq:020d}{_SUFFIX}"
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).replace(self.directory / folder / name)
        self._bytes -= self._sizes.pop(seq)
        return True

    def pending(self, after: int = 0) -> list[int]:
        with self._lock:
            return sorted(s for s in self._sizes if s > after)

    def read(self, seq: int) -> bytes:
        """The report as it was put; SpoolCorrupt when the file was damaged since."""
        return unframe((self.directory / f"{seq:020d}{_SUFFIX}").read_bytes())

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def size_bytes(self) -> int:
        return self._bytes
