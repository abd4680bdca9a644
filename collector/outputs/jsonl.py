"""``jsonl`` sink: every stored window as one JSON line in a file, rotated by size.

Options in ``[sinks.NAME]``: ``path`` (relative paths are under the collector's state
folder; default ``<NAME>.jsonl``), ``max_bytes`` (rotate before the file would grow past
it; default 64 MiB) and ``keep`` (rotated files kept as ``PATH.1`` .. ``PATH.<keep>``,
newest first; default 5). A line is the window as the query API has it: ``node``,
``window_start``, ``window_end`` and ``gpu`` (every field of the GPU window, ``null`` where
missing, ``extra_mean`` / ``extra_max`` with the extra fields). A batch is written with one
``write`` call and flushed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from gpuwarden.collector.outputs.sink import SinkContext
from gpuwarden.common.config import build_section, ranged
from gpuwarden.common.types import WindowRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JsonlOptions:
    path: str = ""
    max_bytes: int = ranged(64 << 20, minimum=1024)
    keep: int = ranged(5, minimum=0, maximum=1000)


def _default(obj: Any) -> Any:
    if isinstance(obj, Mapping):  # extra fields (read-only mappings) as JSON objects
        return dict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def window_json(record: WindowRecord) -> bytes:
    """One window as a JSON line (with its newline)."""
    return orjson.dumps(record, default=_default, option=orjson.OPT_APPEND_NEWLINE)


class JsonlSink:
    def __init__(self, path: Path, *, max_bytes: int = 64 << 20, keep: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._fh: IO[bytes] | None = None
        self._size = 0

    @classmethod
    def from_options(cls, ctx: SinkContext, options: Mapping[str, Any]) -> JsonlSink:
        opts = build_section(JsonlOptions, f"sinks.{ctx.name}", options, environ={})
        path = Path(opts.path or f"{ctx.name}.jsonl")
        if not path.is_absolute():
            path = ctx.state_dir / path
        return cls(path, max_bytes=opts.max_bytes, keep=opts.keep)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("ab")
        self._size = self._fh.tell()

    def write(self, batch: Sequence[WindowRecord]) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path}: write before open")
        data = b"".join(window_json(r) for r in batch)
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._fh.write(data)
        self._fh.flush()
        self._size += len(data)

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        self._fh = None
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        log.info("%s: rotated at %d bytes", self.path, self._size)
        self.open()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
