"""The spool's segment files: append-only logs of reports in pre-zeroed space.

A segment ``<first seq>.seg`` is created at its full size, filled with zeros and fsynced
once, so that appending a report later rewrites blocks the file already owns: one
``pwrite`` and one ``fdatasync`` that flushes data only (no new file, no size or extent
change for the journal to commit, no rename, no unlink when the report is acked).

Each record is a 16-byte header (big-endian: payload length, CRC-32 of the seq and the
payload, seq) and the payload, a serialized ``NodeReport``. Sequence numbers rise within a
segment. Zeros after the last record are space not yet written. A record that fails its
checks (a write torn by a crash or power loss, a damaged disk) is never read as a report:
the scan reports its bytes as damaged and goes on with the next good record.

Reports acked, dropped or set aside are listed in ``<first seq>.gone`` beside their
segment (8-byte seqs, appended, not fsynced: the page cache keeps them across a crash of
the agent; after a crash of the machine the agent sends such reports again and the collector
de-duplicates them). Both files are deleted once every report of the segment is gone.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

SEG_SUFFIX = ".seg"
GONE_SUFFIX = ".gone"
HEADER = struct.Struct(">IIQ")  # payload length, CRC-32 of seq + payload, seq
_SEQ = struct.Struct(">Q")
_ZEROS = bytes(HEADER.size)
_FILL = 1 << 16  # zeros written per call while pre-zeroing


class RecordCorrupt(ValueError):
    """A record's bytes do not hold what its header says."""


def record(seq: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq)))
    return HEADER.pack(len(payload), crc, seq) + payload


def check(seq: int, raw: bytes) -> bytes:
    """The payload of the record ``raw`` stored for ``seq``; RecordCorrupt otherwise."""
    if len(raw) < HEADER.size:
        raise RecordCorrupt(f"{len(raw)} bytes, shorter than a record header")
    length, crc, held = HEADER.unpack_from(raw)
    if held != seq:
        raise RecordCorrupt(f"holds seq={held}, not seq={seq}")
    payload = raw[HEADER.size : HEADER.size + length]
    if len(payload) != length:
        raise RecordCorrupt(f"{len(payload)} of {length} payload bytes (truncated)")
    if zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq))) != crc:
        raise RecordCorrupt("checksum mismatch (torn or altered)")
    return payload


@dataclass(frozen=True, slots=True)
class Scanned:
    """What a scan of a segment found: its good records (seq, offset, size) in order, where
    the last one ends, and the damaged spans (offset, bytes: neither zeros nor a good
    record) between and after them."""

    records: list[tuple[int, int, int]]
    end: int
    damaged: list[tuple[int, bytes]]


_NONZERO = re.compile(rb"[^\0]")


def scan(data: bytes) -> Scanned:
    """Every good record of a segment. Past a damaged record the scan looks for the next
    good one byte by byte (a record is good when its seq rises and its CRC-32 matches), so
    damage costs the reports it touched, not the ones behind them."""
    records: list[tuple[int, int, int]] = []
    damaged: list[tuple[int, bytes]] = []
    pos, last, bad_from = 0, 0, -1
    while pos + HEADER.size <= len(data):
        if data[pos : pos + HEADER.size] == _ZEROS:
            found = _NONZERO.search(data, pos)
            if found is None:
                break
            pos = found.start()
            if bad_from < 0:
                bad_from = pos  # zeros, then bytes again: past a hole where records were
            continue
        length, _, seq = HEADER.unpack_from(data, pos)
        size = HEADER.size + length
        if seq > last and pos + size <= len(data):
            try:
                check(seq, data[pos : pos + size])
            except RecordCorrupt:
                pass
            else:
                if bad_from >= 0:
                    _damage(damaged, data, bad_from, pos)
                    bad_from = -1
                records.append((seq, pos, size))
                pos, last = pos + size, seq
                continue
        if bad_from < 0:
            bad_from = pos
        pos += 1
    if bad_from < 0 and pos < len(data):
        bad_from = pos
    if bad_from >= 0:
        _damage(damaged, data, bad_from, len(data))
    end = records[-1][1] + records[-1][2] if records else 0
    return Scanned(records, end, damaged)


def _damage(out: list[tuple[int, bytes]], data: bytes, start: int, stop: int) -> None:
    """Note the span without its trailing zeros (a span of zeros alone is no damage)."""
    span = data[start:stop].rstrip(b"\0")
    if span:
        out.append((start, span))


def seg_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEG_SUFFIX}"


class Segment:
    """One segment file: appended to while it is the spool's active one, read back by
    offset; ``live`` counts its reports still spooled."""

    def __init__(self, path: Path, size: int, end: int, fd: int | None = None) -> None:
        self.path = path
        self.size = size  # bytes the file holds (pre-zeroed)
        self.end = end  # where the next record goes
        self.last_seq = 0
        self.live = 0
        self._fd = fd
        self._gone_fd: int | None = None

    @property
    def gone_path(self) -> Path:
        return self.path.with_suffix(GONE_SUFFIX)

    @classmethod
    def create(cls, path: Path, size: int) -> Segment:
        """A new, pre-zeroed segment, durable with its directory entry before it is used;
        OSError (a half-made file removed) when the disk refuses."""
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            zeros = bytes(min(size, _FILL))
            done = 0
            while done < size:
                done += os.write(fd, zeros[: size - done])
            os.fsync(fd)
            tmp.rename(path)
            sync_dir(path.parent)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return cls(path, size, 0, fd)

    @property
    def writable(self) -> bool:
        return self._fd is not None

    def fits(self, n: int) -> bool:
        return self._fd is not None and self.end + n <= self.size

    def append(self, seq: int, rec: bytes) -> int:
        """Write ``rec`` durably after the last record; its offset. On OSError the segment
        takes no more records (what follows a failed write could not be trusted)."""
        assert self._fd is not None
        offset = self.end
        try:
            if os.pwrite(self._fd, rec, offset) != len(rec):
                raise OSError(f"short write to {self.path}")
            os.fdatasync(self._fd)
        except OSError:
            self.close()
            raise
        self.end = offset + len(rec)
        self.last_seq = seq
        return offset

    def read(self, offset: int, size: int) -> bytes:
        """The bytes at ``offset``: through the open file while it is the active segment
        (a backlog is read from it report by report), else opened for the read."""
        if self._fd is not None:
            return os.pread(self._fd, size, offset)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def mark_gone(self, seq: int) -> None:
        """List ``seq`` as no longer spooled (see the module's note on durability)."""
        if self._gone_fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._gone_fd = os.open(self.gone_path, flags, 0o600)
        os.write(self._gone_fd, _SEQ.pack(seq))

    def close_gone(self) -> None:
        if self._gone_fd is not None:
            os.close(self._gone_fd)
            self._gone_fd = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        """Remove the segment and its list of reports gone (the segment first: a list left
        alone by a crash between the two is removed at the next start)."""
        self.close()
        self.close_gone()
        self.path.unlink(missing_ok=True)
        self.gone_path.unlink(missing_ok=True)


def read_gone(path: Path) -> set[int]:
    """The seqs listed in a ``.gone`` file (a torn last entry is ignored)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    usable = len(data) - len(data) % _SEQ.size
    return {seq for (seq,) in _SEQ.iter_unpack(data[:usable])}


def zero_out(path: Path, offset: int, n: int) -> None:
    """Overwrite ``n`` bytes of a segment at ``offset`` with zeros, durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(n), offset)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
