"""MIG access capabilities: which ``/dev/nvidia-caps/nvidia-capN`` opens which GPU instance.

The driver lists every capability and its device minor in
``/proc/driver/nvidia-caps/mig-minors``, one ``NAME MINOR`` per line, e.g.
``gpu0/gi2/access 21`` (``gpu0`` is the GPU with minor number 0, ``gi2`` its GPU instance 2).
Slurm names those files in a MIG GRES, so the minor lets attribution tell slices apart.
Reading is split from parsing; the root (``/proc``) is a setting.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

MIG_MINORS = Path("driver/nvidia-caps/mig-minors")  # under the proc root
_GI_ACCESS = re.compile(r"gpu(\d+)/gi(\d+)/access")


def parse_mig_minors(text: str) -> dict[tuple[int, int], int]:
    """``{(gpu minor number, GPU instance id): caps minor}`` of every GPU-instance access line;
    other lines (``config``, ``monitor``, compute instances, anything unreadable) are skipped."""
    out: dict[tuple[int, int], int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        m = _GI_ACCESS.fullmatch(parts[0])
        if m is not None:
            out[(int(m.group(1)), int(m.group(2)))] = int(parts[1])
    return out


def read_mig_minors(proc_root: Path) -> dict[tuple[int, int], int]:
    """The table from ``PROC_ROOT/driver/nvidia-caps/mig-minors``; ``{}`` when it is absent."""
    path = proc_root / MIG_MINORS
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        log.info("%s unreadable (%s): MIG instances are reported without caps minors", path, exc)
        return {}
    return parse_mig_minors(text)
