"""One report through the agent's spool: put (durable before it is sent) and ack.

Beside it, in the same process and folder, the per-report work of the spool layout before
segments: a new file ``<seq>.pb`` written, fsynced and renamed into place, unlinked on ack.
Rounds interleave the two; CPU is the calling thread's (``time.thread_time``), which is
what the agent's sampling thread (put) and streaming thread (ack) pay.

    .venv/bin/python bench/spool_write.py [--reports 400] [--rounds 3] [--bytes 1200] [--dir D]

``--dir`` should be on the filesystem the agent's spool lives on (default: a temporary
folder, often not the same disk).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuwarden.agent.spool import Spool
from gpuwarden.agent.spool_files import frame, write_atomic


def file_per_report(folder: Path) -> tuple[Callable[[int, bytes], None], Callable[[int], None]]:
    def put(seq: int, data: bytes) -> None:
        write_atomic(folder / f"{seq:020d}.pb", frame(data))

    def ack(seq: int) -> None:
        (folder / f"{seq:020d}.pb").unlink()

    return put, ack


def segments(folder: Path) -> tuple[Callable[[int, bytes], None], Callable[[int], None]]:
    spool = Spool(folder)

    def put(seq: int, data: bytes) -> None:
        spool.put(seq, data)

    return put, spool.ack


def measure(layout: str, folder: Path, reports: int, payload: bytes) -> tuple[float, float, float]:
    """CPU of a put, CPU of an ack, wall time of both (us each)."""
    put, ack = (segments if layout == "segments" else file_per_report)(folder)
    put(1, payload)  # a first segment made, a first file: not what is measured
    ack(1)
    put_cpu = ack_cpu = 0.0
    wall = time.perf_counter()
    for seq in range(2, reports + 2):
        t0 = time.thread_time()
        put(seq, payload)
        t1 = time.thread_time()
        ack(seq)
        ack_cpu += time.thread_time() - t1
        put_cpu += t1 - t0
    wall = time.perf_counter() - wall
    return put_cpu / reports * 1e6, ack_cpu / reports * 1e6, wall / reports * 1e6


def main(reports: int, rounds: int, size: int, where: str | None) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    print(f"spool: {reports} reports of {size} bytes, put then ack, {rounds} rounds")
    print(f"{'round':<6} {'layout':<16} {'put CPU':>10} {'ack CPU':>10} {'wall/report':>12}")
    for r in range(rounds):
        for layout in ("file per report", "segments"):
            with tempfile.TemporaryDirectory(dir=where) as tmp:
                put_us, ack_us, wall_us = measure(layout, Path(tmp), reports, payload)
            print(
                f"{r:<6} {layout:<16} {put_us:>8.0f}us {ack_us:>8.1f}us {wall_us:>10.0f}us",
                flush=True,
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=1200, help="a report of 8 GPUs is ~1,200 bytes")
    ap.add_argument("--dir", help="folder to make the spools in")
    a = ap.parse_args()
    main(a.reports, a.rounds, a.bytes, a.dir)
