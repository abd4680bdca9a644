"""Bounded on-disk spool of reports not yet acknowledged by the collector.

Reports are appended to segment files (``agent/spool_segment.py``): each report is one
``pwrite`` and one ``fdatasync`` into space its segment already holds, made before the
report is sent. An acked report costs no write that waits for the disk: its seq is listed
beside its segment, and the segment is deleted once every report in it is acked or dropped;
after a crash of the machine the agent may send again what it cannot prove acked (the
collector de-duplicates by (node, seq)). After a restart or
reconnect the agent replays what is left, in sequence order; a segment of a previous run is
read, never appended to, and bytes in it that are not a good record (a write torn by a
crash, damage: records failing their CRC-32) are copied to ``corrupt/``, counted and never
sent.

Sequence numbers rise strictly across restarts: the counter's file ``seq`` in the same
folder holds a reservation, rewritten once per ``SEQ_BLOCK`` reports.
When the spool is full the oldest reports are dropped and counted (the disk holds at most
one segment more than the bound). On a full disk a new segment takes the place of the
oldest one, whose reports are dropped and counted.
The sampling thread puts reports and the streaming thread acks them: one lock guards the
spool's bookkeeping.
A report the collector rejected as invalid is written to ``rejected/<seq>.pb`` (a plain
serialized ``NodeReport``) for inspection; a report that cannot be read back is written to
``corrupt/`` and counted, so that it never blocks the reports behind it.

Spools of earlier versions held one file per report, ``<seq>.pb`` (``GWS1``, the CRC-32 of
the report, the report); such files are still read, sent and deleted when acked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from pathlib import Path

from gpuwarden.agent.spool_files import (
    PB_SUFFIX,
    SpoolCorrupt,
    SpoolError,
    seqs_in,
    unframe,
    write_atomic,
)
from gpuwarden.agent.spool_segment import (
    GONE_SUFFIX,
    SEG_SUFFIX,
    RecordCorrupt,
    Segment,
    check,
    read_gone,
    record,
    scan,
    seg_name,
    zero_out,
)

__all__ = ["SEGMENT_BYTES", "SEQ_BLOCK", "Spool", "SpoolCorrupt", "SpoolError", "spooled_seqs"]

log = logging.getLogger(__name__)

SEQ_BLOCK = 1 << 20  # sequence numbers reserved per write of ``seq`` (~60 days at 5 s)
SEGMENT_BYTES = 256 << 10  # ~210 reports of 8 GPUs (~1.2 KB): a new segment every ~17 min


def spooled_seqs(directory: Path) -> list[int]:
    """The seqs of the reports a spool folder holds, read without changing anything (safe
    beside a running agent: for inspection and tests)."""
    seqs = set(seqs_in(directory))
    for p in directory.glob(f"*{SEG_SUFFIX}"):
        with contextlib.suppress(OSError):
            gone = read_gone(p.with_suffix(GONE_SUFFIX))
            seqs.update(seq for seq, _, _ in scan(p.read_bytes()).records if seq not in gone)
    return sorted(seqs)


# Where a spooled report is: in a segment (offset, record size), or its own ``.pb`` file
# (segment None, offset 0, file size).
_Loc = tuple[Segment | None, int, int]


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_reports: int = 17280,
        max_bytes: int = 256 << 20,
        segment_bytes: int = SEGMENT_BYTES,
    ):
        if max_reports < 1 or max_bytes < 1 or segment_bytes < 1:
            raise ValueError("spool limits must be positive")
        self.directory = directory
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
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
        self._where: dict[int, _Loc] = {}
        self._active: Segment | None = None  # the segment reports are appended to
        self._gone_open: Segment | None = None  # the segment whose ``.gone`` file is open
        self._gone_failing = False  # said once until a note succeeds again
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # an interrupted write: never acknowledged, never sent
        for p in directory.glob(f"*{PB_SUFFIX}"):
            try:
                self._where[int(p.stem)] = (None, 0, p.stat().st_size)
            except (ValueError, OSError):
                log.warning("ignoring unexpected file in spool: %s", p)
        for p in sorted(directory.glob(f"*{SEG_SUFFIX}")):
            self._recover(p)
        for p in directory.glob(f"*{GONE_SUFFIX}"):
            if not p.with_suffix(SEG_SUFFIX).exists():
                p.unlink(missing_ok=True)  # its segment was deleted just before a crash
        self._bytes = sum(size for _, _, size in self._where.values())
        self._keep_bound()
        self._next_seq = self._load_seq()
        self._reserved = self._next_seq  # nothing reserved yet: the first number writes ``seq``

    def _recover(self, path: Path) -> None:
        """Index the records of a previous run's segment; cut a damaged tail off."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.error("spool: cannot read segment %s (%s); leaving it", path, exc)
            return
        found = scan(data)
        gone = read_gone(path.with_suffix(GONE_SUFFIX))
        for offset, damage in found.damaged:
            aside = self.directory / "corrupt" / f"{path.name}.at-{offset}"
            with contextlib.suppress(OSError):
                write_atomic(aside, damage)
                zero_out(path, offset, len(damage))  # kept aside once, not at every start
            self.corrupt += 1
            log.error(
                "spool: segment %s holds %d damaged bytes at offset %d (a write torn by a "
                "crash, or damage): not a report, never sent; kept in %s",
                path,
                len(damage),
                offset,
                aside,
            )
        seg = Segment(path, found.end, found.end)
        for seq, offset, size in found.records:
            if seq in gone or seq in self._where:  # acked, dropped; or also a ``.pb`` file
                continue
            self._where[seq] = (seg, offset, size)
            seg.live += 1
        if not seg.live:
            seg.delete()
            return
        seg.last_seq = found.records[-1][0]
        if found.end < len(data):
            with contextlib.suppress(OSError):
                os.truncate(path, found.end)  # never appended to again: the rest is waste

    # -- sequence numbers -------------------------------------------------------------
    def _load_seq(self) -> int:
        """Where numbering starts: above every sequence this spool can have handed out.

        Those are bounded by the reservation in ``seq`` (the counter reserves blocks of
        ``SEQ_BLOCK`` numbers ahead, one small write per block, not one per report), by the
        reports still spooled, set aside or rejected, and by the time-based start, which
        alone covers a lost ``seq`` file: the counter rises by one per report, the clock by
        a million per second.
        """
        stored = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            stored = int((self.directory / "seq").read_text().strip())
        kept = [*self._where, *seqs_in(self.directory / "rejected")]
        kept += seqs_in(self.directory / "corrupt")
        return max(stored, max(kept, default=0) + 1, time.time_ns() // 1000)

    def next_seq(self) -> int:
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            if seq >= self._reserved:
                reserve = seq + SEQ_BLOCK
                try:
                    write_atomic(self.directory / "seq", str(reserve).encode())
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
            rec = record(seq, data)
            try:
                seg = self._segment_for(seq, len(rec))
                offset = seg.append(seq, rec)
            except OSError as exc:
                self._disk_trouble(exc)
                self.dropped += 1
                return False
            self._where[seq] = (seg, offset, len(rec))
            seg.live += 1
            self._bytes += len(rec)
            self._keep_bound()
            return True

    def _keep_bound(self) -> None:
        """Drop the oldest reports (counted) while the spool is past a bound; the newest stays."""
        while len(self._where) > self.max_reports or self._bytes > self.max_bytes:
            if len(self._where) == 1:
                break
            oldest = min(self._where)
            self._remove(oldest)
            self.dropped += 1
            log.warning("spool full: dropped unacknowledged report seq=%d", oldest)

    def _segment_for(self, seq: int, n: int) -> Segment:
        """The active segment when ``n`` more bytes fit in it, else a new one; on a full
        disk the oldest reports' segment (or file) gives its space, its reports dropped."""
        active = self._active
        if active is not None and active.fits(n) and seq > active.last_seq:
            return active
        self._active = None
        if active is not None:
            active.close()
            if not active.live:
                self._delete(active)
        path = self.directory / seg_name(seq)
        evicted = False
        while True:
            try:
                seg = Segment.create(path, max(self.segment_bytes, n))
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._where:
                    raise
                self._disk_trouble(exc)
                self._drop_oldest_space()
                evicted = True
        if self.disk_error is not None and not evicted:  # room without making any
            log.warning("spool %s is writable again", self.directory)
            self.disk_error = None
        self._active = seg
        return seg

    def _drop_oldest_space(self) -> None:
        """Drop every report stored where the oldest one is (its segment or file)."""
        oldest = min(self._where)
        home = self._where[oldest][0]
        if home is None:
            self._remove(oldest)
            self.dropped += 1
            return
        for seq in [s for s, loc in self._where.items() if loc[0] is home]:
            self._bytes -= self._where.pop(seq)[2]
            self.dropped += 1
        self._delete(home)

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

    def _forget(self, seq: int) -> _Loc | None:
        """Take ``seq`` out of the bookkeeping; deletes its segment when it was the last
        report there (the active segment stays for the reports to come)."""
        loc = self._where.pop(seq, None)
        if loc is None:
            return None
        seg, _, size = loc
        self._bytes -= size
        if seg is not None:
            seg.live -= 1
            if not seg.live and seg is not self._active:
                self._delete(seg)
            else:
                self._mark_gone(seg, seq)
        return loc

    def _mark_gone(self, seg: Segment, seq: int) -> None:
        if self._gone_open is not seg:  # one ``.gone`` file open at a time (acks come in order)
            if self._gone_open is not None:
                self._gone_open.close_gone()
            self._gone_open = seg
        try:
            seg.mark_gone(seq)
        except OSError as exc:  # not fatal: the report may be sent again after a restart
            if not self._gone_failing:
                log.warning("spool: cannot note acked reports in %s (%s)", seg.gone_path, exc)
            self._gone_failing = True
        else:
            self._gone_failing = False

    def _delete(self, seg: Segment) -> None:
        if self._gone_open is seg:
            self._gone_open = None
        seg.delete()

    def _remove(self, seq: int) -> None:
        loc = self._forget(seq)
        if loc is not None and loc[0] is None:
            self._pb_path(seq).unlink(missing_ok=True)

    def ack(self, seq: int) -> None:
        with self._lock:
            self._remove(seq)

    def reject(self, seq: int) -> bool:
        """Write a report the collector refused to ``rejected/``, as a plain serialized
        ``NodeReport`` (header removed) for inspection; False when it is not spooled."""
        with self._lock:
            if seq not in self._where:
                return False
            try:
                kept = self.read(seq)
            except (OSError, SpoolCorrupt):
                kept = self._raw(seq)
            self._move_aside(seq, "rejected", kept)
            return True

    def set_aside(self, seq: int, reason: str) -> None:
        """Move a report that cannot be read back to ``corrupt/``, count it and say so."""
        with self._lock:
            if seq not in self._where:
                return
            self._move_aside(seq, "corrupt", self._raw(seq))
            self.corrupt += 1
            log.error(
                "spool: report seq=%d cannot be read (%s); moved to %s, delivery continues",
                seq,
                reason,
                self.directory / "corrupt",
            )

    def _raw(self, seq: int) -> bytes:
        """The stored bytes of ``seq`` as they are, header and all (for inspection)."""
        seg, offset, size = self._where[seq]
        try:
            return seg.read(offset, size) if seg else self._pb_path(seq).read_bytes()
        except OSError:
            return b""

    def _move_aside(self, seq: int, folder: str, data: bytes) -> None:
        target = self.directory / folder / f"{seq:020d}{PB_SUFFIX}"
        with contextlib.suppress(OSError):
            write_atomic(target, data)
        self._remove(seq)

    def pending(self, after: int = 0) -> list[int]:
        with self._lock:
            return sorted(s for s in self._where if s > after)

    def read(self, seq: int) -> bytes:
        """The report as it was put; SpoolCorrupt when it was damaged since,
        FileNotFoundError when it is not spooled (acked or dropped)."""
        with self._lock:
            loc = self._where.get(seq)
        if loc is None:
            raise FileNotFoundError(f"report seq={seq} is not spooled")
        seg, offset, size = loc
        if seg is None:
            return unframe(self._pb_path(seq).read_bytes())
        try:
            return check(seq, seg.read(offset, size))
        except RecordCorrupt as exc:
            raise SpoolCorrupt(str(exc)) from exc

    def _pb_path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{PB_SUFFIX}"

    def close(self) -> None:
        """Release the active segment's file (a later put opens a new segment)."""
        with self._lock:
            active, self._active = self._active, None
            if active is not None:
                active.close()
                if not active.live:
                    self._delete(active)
            if self._gone_open is not None:
                self._gone_open.close_gone()
                self._gone_open = None

    def __len__(self) -> int:
        return len(self._where)

    @property
    def size_bytes(self) -> int:
        return self._bytes
