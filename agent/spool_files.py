"""The spool's small files: atomic whole-file writes (the sequence counter, reports set
aside in ``rejected/`` and ``corrupt/``) and the one-file-per-report layout of earlier
versions, ``<seq>.pb`` (``GWS1``, the CRC-32 of the report, big-endian, then the serialized
``NodeReport``), still read so that an upgraded agent drains what its predecessor left."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from pathlib import Path

PB_SUFFIX = ".pb"
_MAGIC = b"GWS1"
_HEADER = struct.Struct(">4sI")  # magic, CRC-32 of the payload


class SpoolError(RuntimeError):
    pass


class SpoolCorrupt(SpoolError):
    """A spooled report cannot be read back as it was written."""


def seqs_in(folder: Path) -> list[int]:
    """The seqs of the ``<seq>.pb`` files in ``folder``."""
    out = []
    with contextlib.suppress(OSError):
        for p in folder.glob(f"*{PB_SUFFIX}"):
            with contextlib.suppress(ValueError):
                out.append(int(p.stem))
    return out


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, zlib.crc32(payload)) + payload


def unframe(data: bytes) -> bytes:
    """The payload of a ``<seq>.pb`` spool file; SpoolCorrupt saying what is wrong otherwise."""
    if len(data) < _HEADER.size:
        raise SpoolCorrupt(f"{len(data)} bytes, shorter than the spool header")
    magic, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise SpoolCorrupt(f"no spool header (starts with {data[:4]!r})")
    payload = data[_HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise SpoolCorrupt("checksum mismatch (truncated or altered)")
    return payload


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, never a part (temp file, fsync,
    rename)."""
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
