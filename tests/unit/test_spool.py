"""The agent's on-disk spool: atomic, ordered, bounded, survives restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.agent.spool import Spool, SpoolCorrupt, SpoolError
from gpuwarden.agent.spool_files import frame
from gpuwarden.agent.spool_segment import HEADER


def test_reports_survive_a_restart_in_sequence_order_and_acks_delete_them(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    seqs = [s.next_seq() for _ in range(3)]
    for seq in seqs:
        s.put(seq, f"report {seq}".encode())
    s.ack(seqs[1])
    again = Spool(tmp_path)
    assert again.pending() == [seqs[0], seqs[2]]
    assert again.read(seqs[2]) == f"report {seqs[2]}".encode()
    assert again.next_seq() > seqs[2]  # the counter keeps rising


def test_sequence_keeps_rising_after_everything_was_acked(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    first = s.next_seq()
    s.put(first, b"x")
    s.ack(first)
    assert Spool(tmp_path).next_seq() > first


def test_sequence_rises_after_restart_even_when_the_clock_went_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(tmp_path)
    last = [s.next_seq() for _ in range(5)][-1]
    s.put(last, b"x")
    s.ack(last)  # nothing left spooled
    monkeypatch.setattr("gpuwarden.agent.spool.time.time_ns", lambda: 0)  # clock set to 1970
    assert Spool(tmp_path).next_seq() > last


def test_sequence_rises_above_reports_set_aside_even_without_its_file(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    seq = s.next_seq()
    s.put(seq, b"bad")
    s.reject(seq)
    (tmp_path / "seq").unlink()
    assert Spool(tmp_path).next_seq() > seq


def test_numbering_reports_rewrites_the_counter_once_per_block_not_per_report(
    tmp_path: Path,
) -> None:
    s = Spool(tmp_path)
    s.next_seq()
    counter = tmp_path / "seq"
    written = (counter.read_bytes(), counter.stat().st_mtime_ns, counter.stat().st_ino)
    for _ in range(100):
        s.next_seq()
    assert (counter.read_bytes(), counter.stat().st_mtime_ns, counter.stat().st_ino) == written


def test_full_spool_drops_oldest_and_counts(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_reports=3)
    seqs = [s.next_seq() for _ in range(5)]
    for seq in seqs:
        s.put(seq, b"data")
    assert s.pending() == seqs[2:]
    assert s.dropped == 2
    assert Spool(tmp_path, max_reports=3).pending() == seqs[2:]  # dropped stay dropped


def test_byte_bound_is_kept(tmp_path: Path) -> None:
    bound = 2 * (HEADER.size + 5)  # two records of 5 bytes each
    s = Spool(tmp_path, max_bytes=bound)
    for _ in range(4):
        seq = s.next_seq()
        s.put(seq, b"12345")
    assert s.size_bytes <= bound
    assert s.dropped == 2


def test_rejected_report_is_moved_aside_not_lost(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    seq = s.next_seq()
    s.put(seq, b"bad")
    s.reject(seq)
    assert s.pending() == []
    assert (tmp_path / "rejected" / f"{seq:020d}.pb").read_bytes() == b"bad"


def test_leftover_temp_file_of_an_interrupted_write_is_ignored(tmp_path: Path) -> None:
    (tmp_path / ".00000000000000000007.pb.tmp").write_bytes(b"half")
    s = Spool(tmp_path)
    assert s.pending() == []
    assert not list(tmp_path.glob(".*.tmp"))


def test_unwritable_spool_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match="cannot create spool directory"):
        Spool(blocker / "spool")


def test_a_damaged_file_is_named_corrupt_and_set_aside(tmp_path: Path) -> None:
    seqs = [101, 102, 103, 104]  # a spool of the one-file-per-report layout of earlier versions
    files = [tmp_path / f"{seq:020d}.pb" for seq in seqs]
    for seq, f in zip(seqs, files, strict=True):
        f.write_bytes(frame(b"report %d" % seq))
    s = Spool(tmp_path)
    files[0].write_bytes(files[0].read_bytes()[:-1])
    files[1].write_bytes(b"")
    files[2].write_bytes(b"\x00" * 12)
    for seq, why in zip(
        seqs, ["checksum mismatch", "shorter than", "no spool header"], strict=False
    ):
        with pytest.raises(SpoolCorrupt, match=why):
            s.read(seq)
        s.set_aside(seq, why)
    assert s.pending() == seqs[3:] and s.corrupt == 3
    assert s.read(seqs[3]) == b"report %d" % seqs[3]
    again = Spool(tmp_path)  # a restart does not bring them back
    assert again.pending() == seqs[3:]
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == [f.name for f in files[:3]]
