"""The spool's segment files: one file appended to, torn writes cut, old spools drained."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpuwarden.agent.spool import Spool, spooled_seqs
from gpuwarden.agent.spool_files import frame
from gpuwarden.agent.spool_segment import HEADER


def payload(seq: int) -> bytes:
    return b"report %020d " % seq + bytes(range(40 + seq % 50))


def filled(folder: Path, n: int, **kw: int) -> tuple[Spool, list[int]]:
    s = Spool(folder, **kw)
    seqs = [s.next_seq() for _ in range(n)]
    for seq in seqs:
        assert s.put(seq, payload(seq))
    return s, seqs


def test_reports_are_appended_to_one_file_that_keeps_its_size(tmp_path: Path) -> None:
    s, _ = filled(tmp_path, 1)
    (segment,) = tmp_path.glob("*.seg")
    before = segment.stat()
    for _ in range(20):
        seq = s.next_seq()
        s.put(seq, payload(seq))
    after = segment.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)  # space it owned
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [segment.name, "seq"]


def test_a_torn_last_record_is_cut_at_every_byte_and_nothing_before_it_is_lost(
    tmp_path: Path,
) -> None:
    s, seqs = filled(tmp_path / "spool", 3, segment_bytes=4096)
    s.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    data = segment.read_bytes()
    last = len(data.rstrip(b"\0"))
    start = last - HEADER.size - len(payload(seqs[2]))
    for cut in range(start, last):
        for torn in ("truncated", "zeros"):  # a short file, or pre-zeroed space not rewritten
            trial = tmp_path / f"{torn}-{cut}"
            shutil.copytree(tmp_path / "spool", trial)
            seg = trial / segment.name
            seg.write_bytes(
                data[:cut] if torn == "truncated" else data[:cut] + bytes(len(data) - cut)
            )
            again = Spool(trial, segment_bytes=4096)
            assert again.pending() == seqs[:2], (torn, cut)
            assert [again.read(q) for q in seqs[:2]] == [payload(q) for q in seqs[:2]]
            torn_bytes = data[start:cut].rstrip(b"\0")  # zeros written look like none written
            assert again.corrupt == (1 if torn_bytes else 0), (torn, cut)
            assert [p.read_bytes() for p in (trial / "corrupt").iterdir()] == (
                [torn_bytes] if torn_bytes else []
            )
            new = again.next_seq()
            assert new > seqs[2]
            assert again.put(new, b"after")
            assert Spool(trial, segment_bytes=4096).pending() == [*seqs[:2], new]
            shutil.rmtree(trial)


def test_acked_and_dropped_reports_stay_gone_after_a_restart(tmp_path: Path) -> None:
    s, seqs = filled(tmp_path, 6, max_reports=5)  # the first one dropped
    s.ack(seqs[2])
    s.ack(seqs[4])
    assert Spool(tmp_path, max_reports=5).pending() == [seqs[1], seqs[3], seqs[5]]


def test_a_segment_is_deleted_once_every_report_in_it_is_gone(tmp_path: Path) -> None:
    s = Spool(tmp_path, segment_bytes=3 * (HEADER.size + 130))  # three reports a segment
    seqs = [s.next_seq() for _ in range(9)]
    for seq in seqs:
        s.put(seq, b"r" * 130)
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) == 3
    for seq in seqs[:3]:
        s.ack(seq)
    assert sorted(tmp_path.glob("*.seg")) == segments[1:]
    assert not list(tmp_path.glob(f"{segments[0].stem}.*"))  # nor its list of reports gone
    assert Spool(tmp_path).pending() == seqs[3:]


def test_a_spool_of_the_previous_version_is_drained_after_an_upgrade(tmp_path: Path) -> None:
    old = [1_700_000_000_000_001 + i for i in range(3)]  # ``<seq>.pb`` files, a ``seq`` file
    for seq in old:
        (tmp_path / f"{seq:020d}.pb").write_bytes(frame(payload(seq)))
    (tmp_path / "seq").write_text(str(old[-1] + 100))
    s = Spool(tmp_path)
    new = s.next_seq()
    assert new > old[-1] + 100
    s.put(new, payload(new))
    assert s.pending() == [*old, new]
    assert [s.read(q) for q in s.pending()] == [payload(q) for q in [*old, new]]
    assert spooled_seqs(tmp_path) == [*old, new]
    for seq in [*old, new]:
        s.ack(seq)
    assert not list(tmp_path.glob("*.pb")) and Spool(tmp_path).pending() == []


WRITER = """
import os
import sys
from pathlib import Path
from gpuwarden.agent.spool import Spool
def say(what, seq):  # one write per line: a kill never leaves half a line
    os.write(1, b"%s %d\\n" % (what, seq))
s = Spool(Path(sys.argv[1]), segment_bytes=4096)
held = []
while True:
    seq = s.next_seq()
    say(b"put", seq)
    s.put(seq, b"report %d " % seq * (seq % 7 + 1))
    say(b"kept", seq)
    held.append(seq)
    if seq % 3 or len(held) > 9:  # most acked at once, some later: whole segments go
        for q in held:
            s.ack(q)
            say(b"acked", q)
        held.clear()
"""


def test_a_writer_killed_at_any_moment_loses_no_report_it_kept(tmp_path: Path) -> None:
    for trial in range(6):
        folder = tmp_path / f"spool{trial}"
        out = tmp_path / f"out{trial}"
        with out.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=fh)
            time.sleep(0.4 + 0.13 * trial)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        said = [line.split() for line in out.read_text().splitlines() if line.count(" ") == 1]
        kept = {int(q) for what, q in said if what == "kept"}
        acked = {int(q) for what, q in said if what == "acked"}
        started = {int(q) for what, q in said if what == "put"}
        assert len(kept) > 10, said[-3:]
        s = Spool(folder, segment_bytes=4096)
        pending = set(s.pending())
        unacked = kept - acked
        maybe = {min(unacked)} if unacked else set()  # the one an ack may have been under way for
        assert unacked - maybe <= pending  # nothing kept and not acked is lost
        assert not pending & acked  # an ack outlives the process (the page cache keeps it)
        assert pending <= started
        for seq in pending:
            assert s.read(seq) == b"report %d " % seq * (seq % 7 + 1)
        assert s.corrupt == 0
        assert s.next_seq() > max(started)
