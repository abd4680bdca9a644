"""What a running collector holds, looked at from a thread inside its process (soak.py's
``--diagnose``): the collector's containers by owner, glibc's heap, SQLite's memory, the
most common object types and, when tracemalloc runs, the allocation sites that grew.

Each look is written to a text file; growth is against the first look after the warm-up,
so a line that keeps rising from look to look is what grows.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import gc
import os
import queue
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[1]) + "/"
_CONTAINERS = (dict, list, set, frozenset, collections.deque)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def heap() -> dict[str, float]:
    """glibc's view (MiB): heap bytes in use, free inside the arenas, mmapped blocks."""
    libc = _libc()
    libc.mallinfo2.restype = _Mallinfo2
    m = libc.mallinfo2()
    mib = 1 << 20
    return {
        "arena": m.arena / mib,
        "in_use": m.uordblks / mib,
        "free_in_arenas": m.fordblks / mib,
        "mmapped": m.hblkhd / mib,
    }


def pymalloc() -> dict[str, float]:
    """Python's small-object allocator (MiB): its arenas now, the bytes of live objects in
    them, and the free room (blocks and pools) kept inside those arenas."""
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    out: dict[str, float] = {"arenas": 0.0, "live": 0.0, "free": 0.0}
    for line in text.splitlines():
        if "=" not in line:
            continue
        name, _, value = line.partition("=")
        try:
            n = float(value.strip().replace(",", ""))
        except ValueError:
            continue
        if name.startswith("# arenas allocated current"):
            out["arenas"] = n  # 1 MiB each on 64-bit CPython >= 3.10
        elif name.startswith("# bytes in allocated blocks"):
            out["live"] = n / (1 << 20)
        elif name.startswith("# bytes in available blocks") or "unused pools" in name:
            out["free"] += n / (1 << 20)
    return out


def sqlite_mib() -> float:
    lib = ctypes.CDLL("libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return float(lib.sqlite3_memory_used()) / (1 << 20)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _items(obj: Any) -> list[Any]:
    """A container's elements, copied (other threads change it meanwhile)."""
    for _ in range(10):
        try:
            return list(obj.values() if isinstance(obj, dict) else obj)
        except RuntimeError:  # changed size during iteration: try again
            continue
    return []


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """(path step, child) of a gpuwarden object or a builtin container."""
    if isinstance(obj, (dict, list, tuple, set, frozenset, collections.deque)):
        for v in _items(obj):
            yield "[*]", v
    elif isinstance(obj, asyncio.Queue):
        yield "._queue", obj._queue  # type: ignore[attr-defined]
    elif isinstance(obj, queue.Queue):
        yield ".queue", obj.queue
    elif type(obj).__module__.startswith("gpuwarden"):
        d = getattr(obj, "__dict__", None)
        if d is not None:
            yield from ((f".{k}", v) for k, v in list(d.items()))
        for cls in type(obj).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if hasattr(obj, name) and name != "__dict__":
                    yield f".{name}", getattr(obj, name)


def containers(roots: dict[str, Any], max_depth: int = 12) -> dict[str, tuple[int, int]]:
    """Path (with ``[*]`` for any element) -> (containers there, their total length); each
    object is counted once, under the first path that reaches it."""
    out: dict[str, list[int]] = {}
    seen: set[int] = set()
    stack: list[tuple[str, Any, int]] = [(name, obj, 0) for name, obj in roots.items()]
    while stack:
        path, obj, depth = stack.pop()
        if id(obj) in seen or depth > max_depth:
            continue
        seen.add(id(obj))
        if isinstance(obj, _CONTAINERS):
            entry = out.setdefault(path, [0, 0])
            entry[0] += 1
            entry[1] += len(obj)
        for step, child in _children(obj):
            if isinstance(child, (str, bytes, int, float, bool, type(None))):
                continue
            stack.append((path + step, child, depth + 1))
    return {k: (v[0], v[1]) for k, v in out.items()}


def _roots() -> dict[str, Any]:
    from gpuwarden.collector.enforce import Enforcer
    from gpuwarden.collector.server import Collector

    found: dict[str, Any] = {}
    for obj in gc.get_objects():
        if isinstance(obj, Collector):
            found["collector"] = obj
        elif isinstance(obj, Enforcer):
            found["enforcer"] = obj
    return found


class Looker:
    def __init__(self, out: Path, *, trace: bool, trim: bool, baseline_after_s: float) -> None:
        self.out = out
        self.baseline_after_s = baseline_after_s
        self.trace = trace
        self.trim = trim
        self.t0 = time.monotonic()
        self.roots: dict[str, Any] = {}
        self.first: dict[str, tuple[int, int]] | None = None
        self.first_types: collections.Counter[str] | None = None
        self.baseline: Any = None
        out.write_text("")

    def forever(self, every: float) -> None:
        while True:
            time.sleep(every)
            try:
                self.look()
            except Exception as exc:  # a diagnostic never stops the collector
                with self.out.open("a") as f:
                    f.write(f"look failed: {exc!r}\n")

    def look(self) -> None:
        t = time.monotonic() - self.t0
        lines = [f"=== t={t:.0f} s"]
        if t < self.baseline_after_s:  # still warming up: compare with the next look
            self.first = self.first_types = self.baseline = None
        if self.trim:
            before = rss_mib()
            _libc().malloc_trim(0)
            lines.append(f"malloc_trim(0): RSS {before:.1f} -> {rss_mib():.1f} MiB")
        h = heap()
        lines.append(
            f"RSS {rss_mib():.1f} MiB; glibc arena {h['arena']:.1f}, in use {h['in_use']:.1f}, "
            f"free in arenas {h['free_in_arenas']:.1f}, mmapped {h['mmapped']:.1f} MiB; "
            f"SQLite {sqlite_mib():.1f} MiB; gc objects {len(gc.get_objects())}"
        )
        pm = pymalloc()
        lines.append(
            f"pymalloc: {pm['arenas']:.0f} arenas, live objects {pm['live']:.1f} MiB, free room "
            f"in its arenas {pm['free']:.1f} MiB"
        )
        if len(self.roots) < 2:
            self.roots = _roots()
        now = containers(self.roots)
        first = self.first if self.first is not None else now
        self.first = first
        lines.append("containers by owner (count, total length, change since the first look):")
        rows = sorted(now.items(), key=lambda kv: -kv[1][1])
        for path, (n, total) in rows:
            grew = total - first.get(path, (0, 0))[1]
            if total >= 50 or grew:
                lines.append(f"  {path:<70} {n:>7} {total:>9} {grew:>+9}")
        types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        first_types = self.first_types if self.first_types is not None else types
        self.first_types = first_types
        lines.append("object types, top 15 by growth since the first look:")
        growth = sorted(types, key=lambda k: -(types[k] - first_types.get(k, 0)))[:15]
        lines += [f"  {k:<40} {types[k]:>9} {types[k] - first_types.get(k, 0):>+9}" for k in growth]
        if self.trace:
            self._trace(lines)
        with self.out.open("a") as f:
            f.write("\n".join(lines) + "\n")

    def _trace(self, lines: list[str]) -> None:
        import tracemalloc

        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__))
        )
        if self.baseline is None:
            self.baseline = snap
        lines.append("tracemalloc, top 15 sites by growth since the first look:")
        for stat in snap.compare_to(self.baseline, "lineno")[:15]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1].removeprefix(_ROOT)
            lines.append(
                f"  {stat.size_diff / 1024:>+10.1f} KiB {stat.count_diff:>+8} blocks "
                f"(now {stat.size / 1024:.0f} KiB)  {where}:{frame.lineno}"
            )
        total = sum(s.size for s in snap.statistics("filename"))
        lines.append(f"tracemalloc total {total / (1 << 20):.1f} MiB")
