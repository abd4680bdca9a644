"""What a site installs besides the package: the systemd units and example configs.

They are package data of this folder (one copy: ``gpuwarden-agent.service``,
``gpuwarden-collector.service``, ``agent.toml``, ``collector.toml``, ``client.toml``), so an
installed gpuwarden can write them out (``gpuwarden systemd-units``, ``gpuwarden
example-config``; see :mod:`gpuwarden.deploy.commands`). The units start
``/opt/gpuwarden/bin/gpuwarden``; another installation prefix is written into them here.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

UNITS = ("gpuwarden-agent.service", "gpuwarden-collector.service")
EXAMPLES = {"agent": "agent.toml", "collector": "collector.toml", "client": "client.toml"}
# Configs hold paths, not secrets, but the agent's and collector's are theirs alone.
EXAMPLE_MODES = {"agent": 0o600, "collector": 0o640, "client": 0o644}
UNIT_MODE = 0o644
DEFAULT_PREFIX = "/opt/gpuwarden"
SHIPPED_EXEC = f"{DEFAULT_PREFIX}/bin/gpuwarden"
# A unit line takes a path as it is only when it needs no quoting or escaping (no space, no
# "%" specifier, no quote or backslash); anything else is refused rather than mangled.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")
# ProtectHome=yes and PrivateTmp=yes in both units hide these from the services.
_HIDDEN_FROM_UNITS = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")  # noqa: S108


class DeployError(Exception):
    """A deployment file cannot be written as asked; the message says why."""


def shipped(name: str) -> str:
    """The text of one shipped file (a unit or an example config)."""
    if name not in UNITS and name not in EXAMPLES.values():
        raise DeployError(f"{name!r}: not a shipped deployment file")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def check_prefix(text: str) -> str:
    """An installation prefix (the venv folder): absolute, normalised, plain characters."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r}: the prefix must be an absolute path (e.g. {DEFAULT_PREFIX})")
    if not _PLAIN_PATH.fullmatch(text):
        raise ValueError(
            f"{text!r}: only letters, digits and . _ + - / are allowed in the prefix "
            "(unit files would need quoting or escaping otherwise)"
        )
    if text == "/" or os.path.normpath(text) != text:
        raise ValueError(f"{text!r}: not a normalised folder path (no //, ., .. or trailing /)")
    return text


def prefix_notes(prefix: str) -> list[str]:
    """What a site should know about this prefix before it starts the units."""
    notes = []
    exe = Path(prefix) / "bin" / "gpuwarden"
    if not os.access(exe, os.X_OK):
        notes.append(f"{exe} is not an executable file yet: install gpuwarden there first")
    for hidden in _HIDDEN_FROM_UNITS:
        if prefix == hidden or prefix.startswith(hidden + "/"):
            notes.append(
                f"{prefix} is below {hidden}, which the units hide from the services "
                "(ProtectHome=yes, PrivateTmp=yes): they will not find the program there"
            )
    return notes


def unit_text(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """One unit with its ExecStart= pointing at ``PREFIX/bin/gpuwarden``."""
    text = shipped(name)
    if name not in UNITS or SHIPPED_EXEC not in text:
        raise DeployError(f"{name!r}: not a shipped unit")
    return text.replace(SHIPPED_EXEC, f"{check_prefix(prefix)}/bin/gpuwarden")


def example_text(role: str) -> str:
    """The example config for ``agent``, ``collector`` or ``client``."""
    if role not in EXAMPLES:
        raise DeployError(f"{role!r}: no example config (one of {', '.join(EXAMPLES)})")
    return shipped(EXAMPLES[role])


def _write(path: Path, text: str, mode: int, *, force: bool) -> None:
    # O_EXCL refuses an existing file (or link) atomically; O_NOFOLLOW keeps --force from
    # writing through a link planted at the target.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _refuse_existing(paths: list[Path], *, force: bool) -> None:
    there = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if there and not force:
        raise DeployError(
            f"{', '.join(there)}: already there, nothing written (--force to overwrite)"
        )


def write_units(dest: Path, prefix: str = DEFAULT_PREFIX, *, force: bool = False) -> list[Path]:
    """Both units into the existing folder ``dest``; none is written if one is in the way."""
    if not dest.is_dir():
        raise DeployError(f"{dest}: no such folder")
    texts = {dest / name: unit_text(name, prefix) for name in UNITS}
    _refuse_existing(list(texts), force=force)
    for path, text in texts.items():
        _write(path, text, UNIT_MODE, force=force)
    return list(texts)


def write_example(role: str, dest: Path, *, force: bool = False) -> Path:
    """The example config for ``role`` as the file ``dest``, or as ROLE.toml in folder ``dest``."""
    text = example_text(role)
    path = dest / EXAMPLES[role] if dest.is_dir() else dest
    if not path.parent.is_dir():
        raise DeployError(f"{path.parent}: no such folder")
    _refuse_existing([path], force=force)
    _write(path, text, EXAMPLE_MODES[role], force=force)
    return path
