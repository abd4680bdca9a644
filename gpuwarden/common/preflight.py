"""Checks made once at start on the files and folders a daemon's config names.

A missing certificate or an unwritable state folder does not heal by retrying: the daemon
stops at start with a :class:`ConfigError` naming the setting, instead of running on and
logging a traceback on every reconnect or write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from gpuwarden.common.config import ConfigError


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def readable_pem(where: str, path: str | Path) -> bytes:
    """The bytes of the PEM file named by setting ``where``."""
    if not str(path):
        raise ConfigError(f"{where}: not set")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {_why(exc)}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{where}: {path} is not a PEM file (no '-----BEGIN' line)")
    return data


def writable_dir(where: str, path: Path) -> None:
    """Make folder ``path`` (named by setting ``where``) if needed and prove a file can be
    written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{where}: {path} exists and is not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create folder {path}: {_why(exc)}") from None
    if not path.is_dir():
        raise ConfigError(f"{where}: {path} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".gpuwarden-probe-", dir=path)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot write in {path}: {_why(exc)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        Path(probe).unlink()
